"""Quantizers of the ALL_INT_SNN method (docs/specs/all_int_snn.md §1.1-1.2, §6.2-6.3).

Plain TensorFlow functions with straight-through gradients, shared by the Keras 3 layers and
the optional tfmot bridge, plus serializable Keras quantizer objects with string aliases.

* ``k_level(x, k)``: ``floor(2^k * relu(x) + 1/2) / 2^k``: activations on the grid ``2^-k``
  (k = number of *fractional* bits, not a bit width), round half up, no upper clip.
  Gradient: 1 where x > 0, else 0 (the ReLU mask).
* ``first_layer(x, levels=4)``: ``floor(min(relu(x), levels) + 1/2)`` in ``{0..levels}``.
  Gradient: 1 on (0, levels], else 0.
* ``ternary(w, threshold=0.7)``: ``delta = threshold * mean|w|`` over the whole tensor,
  ``sign(sign(w + delta) + sign(w - delta))`` in ``{-1, 0, 1}``, no scale. Gradient: identity
  (straight-through), none through delta.
"""
import keras
import tensorflow as tf

from tfsnn.configurable import Configurable
from tfsnn.integers import check_integer


def _straight_through(x, q):
    """Forward value ``q``, gradient of ``x``."""
    return x + tf.stop_gradient(q - x)


def k_level(x, k):
    """k-fractional-bit activation quantizer: ``floor(2^k relu(x) + 1/2) / 2^k``."""
    check_integer(k, "k", 0)
    r = tf.nn.relu(x)
    scale = tf.cast(2.0 ** int(k), r.dtype)
    return _straight_through(r, tf.floor(r * scale + 0.5) / scale)


def first_layer(x, levels=4):
    """Encoding-layer quantizer: ``floor(min(relu(x), levels) + 1/2)`` in ``{0, ..., levels}``."""
    check_integer(levels, "levels", 1)
    r = tf.minimum(tf.nn.relu(x), tf.cast(levels, x.dtype))
    return _straight_through(r, tf.floor(r + 0.5))


def ternary_threshold(w, threshold=0.7):
    """``delta = threshold * mean(|w|)`` over the whole tensor (a scalar)."""
    return threshold * tf.reduce_mean(tf.abs(w))


def ternary(w, threshold=0.7):
    """Ternary weights ``sign(sign(w + delta) + sign(w - delta))`` in {-1, 0, 1}, STE gradient."""
    delta = tf.stop_gradient(ternary_threshold(w, threshold))
    q = tf.sign(tf.sign(w + delta) + tf.sign(w - delta))
    return _straight_through(w, q)


# --------------------------------------------------------------------------- Keras objects

@keras.saving.register_keras_serializable(package="tfsnn")
class Quantizer(Configurable):
    """Base of tfsnn's serializable quantizers: ``q(x)`` plus ``get_config``."""

    alias = None

    def __call__(self, x):
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="tfsnn")
class KLevel(Quantizer):
    """Hidden-layer activation quantizer with step ``2^-k`` (alias ``"k_level"``, k=0)."""

    alias = "k_level"

    def __init__(self, k=0):
        self.k = check_integer(k, "k", 0)

    def __call__(self, x):
        return k_level(x, self.k)

    def get_config(self):
        return {"k": self.k}


@keras.saving.register_keras_serializable(package="tfsnn")
class FirstLayer(Quantizer):
    """Encoding-layer quantizer, levels ``0..levels`` (alias ``"first_layer"``, levels=4)."""

    alias = "first_layer"

    def __init__(self, levels=4):
        self.levels = check_integer(levels, "levels", 1)

    def __call__(self, x):
        return first_layer(x, self.levels)

    def get_config(self):
        return {"levels": self.levels}


@keras.saving.register_keras_serializable(package="tfsnn")
class Ternary(Quantizer):
    """Ternary weight quantizer, ``delta = threshold * mean|w|`` (alias ``"ternary"``)."""

    alias = "ternary"

    def __init__(self, threshold=0.7):
        if float(threshold) < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold!r}")
        self.threshold = float(threshold)

    def __call__(self, w):
        return ternary(w, self.threshold)

    def get_config(self):
        return {"threshold": self.threshold}


ALIASES = {cls.alias: cls for cls in (KLevel, FirstLayer, Ternary)}


def get(identifier):
    """A quantizer from ``None``, an instance, a string alias or a serialized dict.

    Aliases: ``"k_level"`` (k=0), ``"k_level:K"`` (k=K), ``"first_layer"``, ``"ternary"``.
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        name, _, arg = identifier.partition(":")
        if name not in ALIASES:
            raise ValueError(f"unknown quantizer {identifier!r}; known aliases: "
                             f"{sorted(ALIASES)} (k_level also as 'k_level:K')")
        if not arg:
            return ALIASES[name]()
        if name != "k_level":
            raise ValueError(f"only 'k_level' takes an argument ('k_level:K'), got {identifier!r}")
        return KLevel(int(arg))
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise TypeError(f"cannot interpret {identifier!r} as a quantizer")


def serialize(quantizer):
    """Config dict of a quantizer (or None) for a layer's ``get_config``."""
    return None if quantizer is None else keras.saving.serialize_keras_object(quantizer)

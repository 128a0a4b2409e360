"""Spike functions and their surrogate gradients, by name (docs/specs/hybrid_and_spike_bp.md §2.7, §3.5).

A spike is ``o = H(z)`` with the *normalised* membrane ``z = V/theta - 1`` and the strict
Heaviside ``H(z) = 1[z > 0]`` (so ``H(0) = 0``). A surrogate replaces the zero-almost-everywhere
``dH/dz`` by a pseudo-derivative ``sigma = do/dz``; a neuron then uses ``do/dV = sigma / theta``.

Registered surrogates (``get(name, **params)``):

* ``"stdb"``  (``STDB``): ``alpha * exp(-beta * dt)``; ``dt`` = steps since the neuron's previous
  spike (Rathi et al. 2020). Independent of ``z``. Defaults alpha=0.3, beta=0.01.
* ``"linear"`` / ``"triangle"`` (``Linear``): ``gamma * max(0, 1 - |z|)`` (Bellec). gamma=0.3.
* ``"lee"`` (``LeeSpike``): ``scale * H(z)``, i.e. ``do/dV = 1[V > theta] / theta`` gated by the
  actual spike (Lee et al. 2020; the leak correction NG lives in the neuron). scale=1.
* ``"fast_sigmoid"`` (``FastSigmoid``): ``gamma / (1 + slope*|z|)^2`` (SuperSpike). gamma=1, slope=10.
* ``"atan"`` (``ATan``): ``(alpha/2) / (1 + (pi/2 * alpha * z)^2)``. alpha=2.
* ``"gaussian"`` (``Gaussian``): ``gamma * exp(-z^2 / (2 sigma^2))``. gamma=1, sigma=0.5.

Each surrogate is a serializable object with ``grad(z, spike=None, dt=None)`` (the pseudo-
derivative as a tensor, no gradient through it) and ``spike(z, dt=None)`` (a per-step
``tf.custom_gradient`` spike function: forward ``H(z)``, backward ``upstream * grad``).
The class attribute ``needs`` (one of ``NEEDS``) declares what ``grad`` reads, i.e. what a fused
neuron must keep from its forward pass: ``"membrane"`` (``z``; the default), ``"spike_age"``
(``dt``; STDB) or ``"spike"`` (only ``spike``; Lee). ``uses_dt`` is ``needs == "spike_age"``.
This module imports no layers.
"""
import math

import keras
import tensorflow as tf

from tfsnn.configurable import Configurable

_REGISTRY = {}
# What a surrogate's ``grad`` reads (``Surrogate.needs``): the normalised membrane ``z``, the
# spike age ``dt`` (steps since the previous spike), or only the spike ``H(z)``.
NEEDS = ("membrane", "spike_age", "spike")


def heaviside(z):
    """Strict Heaviside ``1[z > 0]`` in the dtype of ``z`` (float), as ``sign(relu(z))``: equal
    to ``cast(z > 0)`` for every non-NaN ``z`` (NaN stays NaN, so a broken membrane shows in the
    spikes) and cheaper in per-step graph loops on CPU: on a ``[64, 500]`` frame, comparison +
    cast took ~28 us more than one multiply, ``sign(relu)`` ~1 us more (2026-12-07)."""
    return tf.sign(tf.nn.relu(z))


def register(*names):
    """Class decorator: register a ``Surrogate`` subclass under one or more names."""
    def deco(cls):
        if cls.needs not in NEEDS:
            raise ValueError(f"{cls.__name__}.needs must be one of {NEEDS}, got {cls.needs!r}")
        cls = keras.saving.register_keras_serializable(package="tfsnn")(cls)
        for n in names:
            if n in _REGISTRY:
                raise ValueError(f"surrogate name {n!r} already registered")
            _REGISTRY[n] = cls
        cls.name = names[0]
        return cls
    return deco


def names():
    """Sorted registered surrogate names."""
    return sorted(_REGISTRY)


class Surrogate(Configurable):
    """Base class: ``H(z)`` forward, ``grad(z, spike, dt)`` as its pseudo-derivative ``do/dz``."""

    name = None
    needs = "membrane"  # what grad reads, one of NEEDS (see the module docstring)

    @property
    def uses_dt(self):
        """Whether ``grad`` needs ``dt``, the spike age (``needs == "spike_age"``)."""
        return self.needs == "spike_age"

    def grad(self, z, spike=None, dt=None):
        raise NotImplementedError

    def spike(self, z, dt=None):
        """Per-step spike ``H(z)`` whose tape gradient is ``upstream * grad(z, H(z), dt)``.

        ``dt`` (same shape as ``z``, only for ``uses_dt`` surrogates) gets no gradient.
        """
        if self.uses_dt and dt is None:
            raise ValueError(f"surrogate {self.name!r} needs dt (steps since the previous spike)")

        @tf.custom_gradient
        def _spike(z_):
            s = heaviside(z_)

            def backward(upstream):
                return upstream * tf.stop_gradient(self.grad(z_, s, dt))
            return s, backward
        return _spike(z)

    __call__ = spike


def _positive(name, v):
    v = float(v)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return v


@register("stdb")
class STDB(Surrogate):
    """Spike-timing-dependent surrogate ``alpha * exp(-beta * dt)``, ``dt`` in steps (Rathi)."""

    needs = "spike_age"

    def __init__(self, alpha=0.3, beta=0.01):
        self.alpha = _positive("alpha", alpha)
        self.beta = float(beta)
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")

    def grad(self, z, spike=None, dt=None):
        if dt is None:
            raise ValueError("surrogate 'stdb' needs dt (steps since the previous spike)")
        dt = tf.cast(dt, z.dtype)
        return self.alpha * tf.exp(-self.beta * dt) + tf.zeros_like(z)

    def get_config(self):
        return {"alpha": self.alpha, "beta": self.beta}


@register("linear", "triangle")
class Linear(Surrogate):
    """Piecewise-linear (triangle) surrogate ``gamma * max(0, 1 - |z|)`` (Bellec)."""

    def __init__(self, gamma=0.3):
        self.gamma = _positive("gamma", gamma)

    def grad(self, z, spike=None, dt=None):
        return self.gamma * tf.nn.relu(1.0 - tf.abs(z))

    def get_config(self):
        return {"gamma": self.gamma}


@register("lee")
class LeeSpike(Surrogate):
    """Spike-gated straight-through ``scale * H(z)``: ``do/dV = 1[V > theta]/theta`` (Lee)."""

    needs = "spike"  # grad reads only the spike (z is used only when spike is None)

    def __init__(self, scale=1.0):
        self.scale = _positive("scale", scale)

    def grad(self, z, spike=None, dt=None):
        s = heaviside(z) if spike is None else tf.cast(spike, z.dtype)
        return self.scale * s

    def get_config(self):
        return {"scale": self.scale}


@register("fast_sigmoid")
class FastSigmoid(Surrogate):
    """SuperSpike surrogate ``gamma / (1 + slope*|z|)^2``."""

    def __init__(self, gamma=1.0, slope=10.0):
        self.gamma = _positive("gamma", gamma)
        self.slope = _positive("slope", slope)

    def grad(self, z, spike=None, dt=None):
        return self.gamma / tf.square(1.0 + self.slope * tf.abs(z))

    def get_config(self):
        return {"gamma": self.gamma, "slope": self.slope}


@register("atan")
class ATan(Surrogate):
    """Arctangent surrogate ``(alpha/2) / (1 + (pi/2 * alpha * z)^2)``."""

    def __init__(self, alpha=2.0):
        self.alpha = _positive("alpha", alpha)

    def grad(self, z, spike=None, dt=None):
        return (self.alpha / 2.0) / (1.0 + tf.square((math.pi / 2.0) * self.alpha * z))

    def get_config(self):
        return {"alpha": self.alpha}


@register("gaussian")
class Gaussian(Surrogate):
    """Gaussian surrogate ``gamma * exp(-z^2 / (2 sigma^2))``."""

    def __init__(self, gamma=1.0, sigma=0.5):
        self.gamma = _positive("gamma", gamma)
        self.sigma = _positive("sigma", sigma)

    def grad(self, z, spike=None, dt=None):
        # square, then one multiply: two unary ops in a row (square, negate) are fused by
        # Grappler into a _UnaryOpsComposition, which took ~4x as long per frame on CPU
        return self.gamma * tf.exp(tf.square(z) * (-0.5 / self.sigma ** 2))

    def get_config(self):
        return {"gamma": self.gamma, "sigma": self.sigma}


def get(identifier, **params):
    """A surrogate from a name (plus ``params``), an instance, or a serialized dict.

    ``get("stdb", alpha=0.3, beta=0.01)``; ``get(Linear(0.5))`` returns it unchanged.
    """
    if isinstance(identifier, Surrogate):
        if params:
            raise ValueError("params are only accepted with a surrogate name")
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _REGISTRY:
            raise ValueError(f"unknown surrogate {identifier!r}; known: {names()}")
        try:
            return _REGISTRY[key](**params)
        except TypeError as e:
            raise ValueError(f"bad params for surrogate {identifier!r}: {params} ({e})") from None
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise TypeError(f"cannot interpret {identifier!r} as a surrogate; use one of {names()}")


def serialize(surrogate):
    """Config dict of a surrogate for a layer's ``get_config``."""
    return keras.saving.serialize_keras_object(surrogate)

"""Input encoders: a static input ``[B, ...]`` -> a spike / current sequence ``[B, T, ...]``
(docs/specs/hybrid_and_spike_bp.md §2.4, §3.2, §4.2).

* ``DirectEncoder(T)``: the input repeated at every step (analog current into the first layer).
* ``PoissonEncoder(T, gain, signed=False, strict=False)``: Bernoulli spikes with a fresh uniform
  ``u ~ U[0, 1)`` per element and step. Rate ``p = gain * |x|`` (clipped to [0, 1]).
  ``strict=False``: ``1[u <= p]`` (Rathi); ``strict=True``: ``1[p > u]`` (Lee). A zero input
  never spikes. ``signed=True`` multiplies by ``sign(x)`` (negative pixels emit -1 spikes);
  ``signed=False`` treats negative inputs as rate 0.
* ``SignedPoissonEncoder``: ``PoissonEncoder`` with ``signed=True``.

Under a distribution strategy with R replicas in sync (``--strategy mirrored | multi_worker``)
the Poisson layers draw the noise of the whole global batch ``[R, b, T, ...]`` on every replica
(the seed generator advances alike everywhere) and replica r uses block r: replica r's local
batch being rows ``r*b .. r*b+b-1`` of the global batch (as ``tf.distribute`` splits it), the
trains equal a one-process run's draw for the same global batch and seed, up to how the global
shape ``[R, b]`` vs ``[R*b]`` maps onto the generator's stream (equal for the stateless
Philox draws Keras makes: the same number of values in the same row-major order).

``poisson_encode(x, T, ..., seed)`` is the functional form; a stateless ``seed`` (an int pair)
gives identical trains on every call.

The layers' symbolic output shape leaves the time axis dynamic (``[B, None, ...]``) so that a
sub-model starting at an encoder's output (e.g. threshold balancing) can run any T.
"""
import keras
import tensorflow as tf

from tfsnn.integers import check_integer
from tfsnn.timeaxis import time_shape


def repeat_in_time(x, timesteps):
    """``[B, ...] -> [B, T, ...]`` by repetition."""
    x = tf.convert_to_tensor(x)
    return tf.repeat(tf.expand_dims(x, 1), check_integer(timesteps, "timesteps", 1), axis=1)


def poisson_encode(x, timesteps, gain=1.0, signed=False, strict=False, seed=None, uniform=None):
    """Bernoulli (rate-coded) spike trains ``[B, T, ...]`` of ``x`` ``[B, ...]``.

    ``seed``: None (tf.random global stream) or a stateless seed (shape [2] ints) for
    reproducible trains. ``uniform``: optional pre-drawn ``u`` ``[B, T, ...]`` (for tests).
    """
    t = check_integer(timesteps, "timesteps", 1)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, keras.config.floatx())
    p = tf.clip_by_value(gain * (tf.abs(x) if signed else tf.nn.relu(x)), 0.0, 1.0)
    p = tf.expand_dims(p, 1)
    if uniform is None:
        if seed is None:
            uniform = tf.random.uniform(time_shape(x, t), dtype=x.dtype)
        else:
            uniform = tf.random.stateless_uniform(time_shape(x, t), seed, dtype=x.dtype)
    fired = (p > uniform) if strict else (uniform <= p)
    s = tf.cast(fired & (p > 0), x.dtype)
    return s * tf.expand_dims(tf.sign(x), 1) if signed else s


@keras.saving.register_keras_serializable(package="tfsnn")
class DirectEncoder(keras.layers.Layer):
    """Direct (analog) encoding: ``[B, ...] -> [B, T, ...]``, the input at every step."""

    def __init__(self, timesteps, **kwargs):
        super().__init__(**kwargs)
        self.timesteps = check_integer(timesteps, "timesteps", 1)

    def call(self, x):
        return repeat_in_time(x, self.timesteps)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "timesteps": self.timesteps}


@keras.saving.register_keras_serializable(package="tfsnn")
class PoissonEncoder(keras.layers.Layer):
    """Rate (Bernoulli) encoding ``[B, ...] -> [B, T, ...]`` with a fresh draw every step and
    call (training and inference alike). ``gain``: rate per unit input (Rathi's ResNet 0.9, Lee's
    MNIST 0.5). See the module docstring for ``signed`` / ``strict``."""

    def __init__(self, timesteps, gain=1.0, signed=False, strict=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.timesteps = check_integer(timesteps, "timesteps", 1)
        if not float(gain) > 0:
            raise ValueError(f"gain must be > 0, got {gain!r}")
        self.gain = float(gain)
        self.signed = bool(signed)
        self.strict = bool(strict)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x):
        x = tf.cast(x, self.compute_dtype)
        shape = time_shape(x, self.timesteps)
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if replicas == 1:
            u = keras.random.uniform(shape, dtype=self.compute_dtype, seed=self.seed_generator)
        else:  # the global batch's draw, this replica's rows (module docstring)
            u = keras.random.uniform(tf.concat([[replicas], shape], 0),
                                     dtype=self.compute_dtype, seed=self.seed_generator)
            u = tf.gather(u, ctx.replica_id_in_sync_group)
        return poisson_encode(x, self.timesteps, self.gain, self.signed, self.strict, uniform=u)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "timesteps": self.timesteps, "gain": self.gain,
                "signed": self.signed, "strict": self.strict, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfsnn")
class SignedPoissonEncoder(PoissonEncoder):
    """``PoissonEncoder`` with ``signed=True``: ``sign(x) * 1[u <= gain*|x|]``."""

    def __init__(self, timesteps, gain=1.0, signed=True, strict=False, seed=None, **kwargs):
        super().__init__(timesteps, gain, signed, strict, seed, **kwargs)

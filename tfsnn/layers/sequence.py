"""Wrappers that apply per-frame Keras layers to spiking sequences ``[batch, time, ...]``.

* ``TimeFolded``: a stateless layer (Conv2D, pooling, Flatten, Dense, ...) on all ``B*T`` frames at
  once (time folded into the batch).
* ``TimeConstantDropout``: dropout with one mask per sequence, shared by every time step.
* ``SpikeDropout``: Keras ``Dropout`` (a mask per element and step) from 16-bit random draws.
"""
import keras
import tensorflow as tf

from tfsnn.timeaxis import fold_time, unfold_time


@keras.saving.register_keras_serializable(package="tfsnn")
class TimeFolded(keras.layers.Wrapper):
    """Apply a stateless per-frame layer (Conv2D, pooling, Flatten, ...) to ``[B, T, ...]`` by
    folding time into the batch: one call on ``[B*T, ...]``, reshaped back to ``[B, T, ...]``.

    (``keras.layers.TimeDistributed`` in Keras 3 loops over time instead: T small calls.)
    """

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"{self.name}: input must be [batch, time, ...], got {input_shape}")
        if not self.layer.built:
            self.layer.build((None, *input_shape[2:]))
        self.built = True

    def call(self, x, training=None):
        shape = tf.shape(x)
        y = self.layer(fold_time(x), training=training)
        return unfold_time(y, shape[0], shape[1])

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None, *input_shape[2:]))
        return (input_shape[0], input_shape[1], *inner[1:])


@keras.saving.register_keras_serializable(package="tfsnn")
class TimeConstantDropout(keras.layers.Layer):
    """Dropout whose mask ``[B, 1, ...]`` in ``{0, 1/(1-rate)}`` is drawn once per call and
    shared by every time step of ``[B, T, ...]`` (docs/specs/hybrid_and_spike_bp.md §2.9, §3.7). Identity at inference."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def mask(self, x):
        """A fresh mask ``[B, 1, ...]`` for the sequence ``x``."""
        shape = tf.concat([tf.shape(x)[:1], [1], tf.shape(x)[2:]], axis=0)
        u = keras.random.uniform(shape, dtype=x.dtype, seed=self.seed_generator)
        return tf.cast(u >= self.rate, x.dtype) / (1.0 - self.rate)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        return x * self.mask(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


UNIFORM16 = 65536


@keras.saving.register_keras_serializable(package="tfsnn")
class SpikeDropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` (an independent mask per element, i.e. per neuron and time step of
    ``[B, T, ...]``) drawing 16-bit uniforms, two per 32-bit random word, instead of one float32
    each: the drop probability is ``rate`` rounded to a multiple of 1/65536 (``effective_rate``;
    0.3 -> 0.300003) and kept values are scaled by ``1 / (1 - effective_rate)``. Random numbers
    are most of a dropout's cost on CPU: forward + backward on ``[64, 25, 500]`` took 7.7 ms vs
    ``keras.layers.Dropout``'s 11.5 (one core, side by side). Identity at inference;
    ``noise_shape`` is not supported (``TimeConstantDropout`` shares a mask over time)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        if noise_shape is not None:
            raise ValueError("SpikeDropout draws a mask per element; noise_shape must be None")
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate!r}")
        super().__init__(rate, seed=seed, **kwargs)
        self.drop_level = round(float(rate) * UNIFORM16)
        if self.drop_level == UNIFORM16:  # rate within 2^-17 of 1
            self.drop_level -= 1

    @property
    def effective_rate(self):
        """The drop probability actually used: ``round(rate * 65536) / 65536``."""
        return self.drop_level / UNIFORM16

    def keep_mask(self, x):
        """A fresh mask of ``x``'s shape in ``{0, 1 / (1 - effective_rate)}``."""
        size = tf.size(x)
        words = keras.random.randint([(size + 1) // 2], -2 ** 31, 2 ** 31 - 1, dtype="int32",
                                     seed=self.seed_generator)
        u16 = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]  # uniform in [0, 65536)
        keep = tf.cast(tf.reshape(u16, tf.shape(x)) >= self.drop_level, x.dtype)
        return keep * (1.0 / (1.0 - self.effective_rate))

    def call(self, inputs, training=False):
        if not training or self.drop_level == 0:
            return inputs
        return inputs * self.keep_mask(inputs)

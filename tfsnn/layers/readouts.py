"""Output layers that turn a sequence ``[batch, time, ...]`` into logits ``[batch, ...]``.

* ``SumReadout``: ``sum_t x(t)`` (or the mean), Rathi et al.'s output.
* ``LeakyMeanReadout``: Lee et al.'s leaky output integrator.
"""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfsnn")
class SumReadout(keras.layers.Layer):
    """Rathi's output: ``sum_t x(t)`` over the time axis, ``[B, T, ...] -> [B, ...]``
    (apply a bias-free Dense before it; ``divide_by_time=True`` gives the mean)."""

    def __init__(self, divide_by_time=False, **kwargs):
        super().__init__(**kwargs)
        self.divide_by_time = bool(divide_by_time)

    def call(self, x):
        return tf.reduce_mean(x, axis=1) if self.divide_by_time else tf.reduce_sum(x, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "divide_by_time": self.divide_by_time}


@keras.saving.register_keras_serializable(package="tfsnn")
class LeakyMeanReadout(keras.layers.Layer):
    """Lee's output integrator ``(1/T) sum_t leak^(T-t) x(t)``, ``[B, T, ...] -> [B, ...]``.

    Forward weights ``leak^(T-t)`` (t = 0..T-1); backward weights ``1/T`` (the leak is
    ignored in the gradient, as in the original)."""

    def __init__(self, leak=0.99, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < float(leak) <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak!r}")
        self.leak = float(leak)

    def call(self, x):
        n = tf.shape(x)[1]
        t = tf.cast(tf.range(n), x.dtype)
        w = tf.pow(tf.constant(self.leak, x.dtype), tf.cast(n, x.dtype) - t)
        w = tf.reshape(w, tf.concat([[1, n], tf.ones([tf.rank(x) - 2], tf.int32)], 0))
        plain = tf.reduce_mean(x, axis=1)
        weighted = tf.reduce_sum(x * w, axis=1) / tf.cast(n, x.dtype)
        return plain + tf.stop_gradient(weighted - plain)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "leak": self.leak}

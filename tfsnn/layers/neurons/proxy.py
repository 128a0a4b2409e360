"""Proxy-learning building blocks (Kheradpisheh et al. 2022, "Spiking neural networks trained
via proxy", IEEE Access 10).

* ``if_spikes``: SpikingJelly's IF neuron (``v += I``, ``s = 1[v >= theta]``, hard reset to 0),
  forward only, ``[B, T, ...] -> [B, T, ...]``.
* ``ProxyBatchNorm``: one gamma/beta and two sets of moving statistics (``ann`` / ``snn``
  branches).
"""
import keras
import tensorflow as tf

from tfsnn.timeaxis import scan_time


def if_spikes(current, threshold=2.0):
    """SpikingJelly IF, forward only: ``v += I[t]``, ``s = 1[v >= threshold]``, ``v <- 0`` on a
    spike; ``v`` starts at 0, no leak, no lower bound. ``[B, T, ...] -> [B, T, ...]`` spikes.

    For a constant current ``I > 0`` over T steps the count is ``floor(T / ceil(theta/I))``.
    ``threshold`` is a Python float (note: this differs from ``tfsnn.layers.neurons``' strict
    ``v > theta``; equality fires here).
    """
    current = tf.stop_gradient(tf.convert_to_tensor(current))

    def step(v, i_t):
        v = v + i_t
        s = tf.cast(v >= threshold, v.dtype)
        return v * (1.0 - s), s

    return scan_time(step, current, tf.zeros_like(current[:, 0]))[0]


@keras.saving.register_keras_serializable(package="tfsnn")
class ProxyBatchNorm(keras.layers.Layer):
    """BatchNorm over the last axis with one ``gamma``/``beta`` and two sets of moving statistics,
    ``ann_mean/ann_var`` and ``snn_mean/snn_var`` (PyTorch semantics: ``momentum`` 0.1 is the
    weight of the new batch, the moving variance takes the unbiased batch variance, ``eps``
    1e-5).

    ``call(x, branch="ann"|"snn", batch_stats=False, time_axis=False)``: with ``batch_stats``,
    normalise with the batch statistics and update the branch's moving ones; else normalise with
    the moving ones (BN training / inference mode). ``batch_stats`` may be a scalar bool tensor
    (both are computed, one is picked), so a training step can switch BatchNorm to inference
    mode without retracing (the proxy BN freeze).
    ``time_axis=True`` (``x`` ``[B, T, ..., C]``): batch statistics per time step and T successive
    moving-average updates, as when the SNN calls the layer once per step.
    """

    def __init__(self, momentum=0.1, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def build(self, input_shape):
        c = (int(input_shape[-1]),)
        self.gamma = self.add_weight(name="gamma", shape=c, initializer="ones")
        self.beta = self.add_weight(name="beta", shape=c, initializer="zeros")
        self.ann_mean = self.add_weight(name="ann_mean", shape=c, initializer="zeros",
                                        trainable=False)
        self.ann_var = self.add_weight(name="ann_var", shape=c, initializer="ones",
                                       trainable=False)
        self.snn_mean = self.add_weight(name="snn_mean", shape=c, initializer="zeros",
                                        trainable=False)
        self.snn_var = self.add_weight(name="snn_var", shape=c, initializer="ones",
                                       trainable=False)

    def moving_stats(self, branch):
        if branch not in ("ann", "snn"):
            raise ValueError(f"branch must be 'ann' or 'snn', got {branch!r}")
        return (self.ann_mean, self.ann_var) if branch == "ann" else (self.snn_mean, self.snn_var)

    def call(self, x, branch="ann", batch_stats=False, time_axis=False):
        moving_mean, moving_var = self.moving_stats(branch)
        if batch_stats is None or batch_stats is False:
            return self._normalize(x, moving_mean, moving_var)
        if batch_stats is True:
            y, new_mean, new_var = self._batch_norm(x, moving_mean, moving_var, time_axis)
        else:  # a tensor flag: only the chosen mode runs (tf.cond), no retracing
            m0, v0 = tf.convert_to_tensor(moving_mean), tf.convert_to_tensor(moving_var)
            y, new_mean, new_var = tf.cond(
                tf.cast(batch_stats, tf.bool),
                lambda: self._batch_norm(x, m0, v0, time_axis),
                lambda: (self._normalize(x, m0, v0), m0, v0))
        moving_mean.assign(new_mean)
        moving_var.assign(new_var)
        return y

    def _normalize(self, x, mean, var):
        return (x - mean) * tf.math.rsqrt(var + self.epsilon) * self.gamma + self.beta

    def _batch_norm(self, x, moving_mean, moving_var, time_axis):
        """``(y, new_moving_mean, new_moving_var)`` in training mode. The statistics are
        reductions of ``x`` viewed as ``[B, T, N, C]`` (``time_axis``) or ``[1, 1, N, C]``:
        reducing the contiguous middle axis first, then the batch, is ~9x faster on CPU than one
        reduction over the axes (0, 2, 3) of ``[B, T, H, W, C]``; the values agree to float
        rounding."""
        c = x.shape[-1]
        lead = tf.shape(x)[:2] if time_axis else tf.constant([1, 1])
        xs = tf.reshape(x, tf.concat([lead, [-1, c]], 0))
        mean = tf.reduce_mean(tf.reduce_mean(xs, 2, keepdims=True), 0, keepdims=True)
        d2 = tf.math.squared_difference(xs, tf.stop_gradient(mean))
        var = tf.reduce_mean(tf.reduce_mean(d2, 2, keepdims=True), 0, keepdims=True)
        n = tf.cast(tf.shape(xs)[0] * tf.shape(xs)[2], x.dtype)
        y = tf.reshape(self._normalize(xs, mean, var), tf.shape(x))
        mean = tf.reshape(mean, [-1, c])  # [T or 1, C]
        unbiased = tf.reshape(var, [-1, c]) * n / tf.maximum(n - 1.0, 1.0)
        steps = tf.shape(mean)[0]
        keep = 1.0 - self.momentum
        # m_T = keep^T m_0 + momentum * sum_t keep^(T-1-t) mu_t  (T successive updates)
        w = self.momentum * tf.pow(keep, tf.cast(steps - 1 - tf.range(steps), x.dtype))
        decay = keep ** tf.cast(steps, x.dtype)
        new_mean = decay * moving_mean + tf.tensordot(w, tf.stop_gradient(mean), 1)
        new_var = decay * moving_var + tf.tensordot(w, tf.stop_gradient(unbiased), 1)
        return y, new_mean, new_var

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}

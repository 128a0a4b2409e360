"""Losses of the directly trained SNNs (all registered, so saved models load after
``import tfsnn``).

* ``SumSquaredError``: Lee et al.'s ``0.5 * sum (y - onehot)^2`` on the output integrator.
* ``FilteredMSE``: the IIR associative-memory loss, MSE between dual-exponential-filtered spike
  trains ``[B, T, N]``.
"""
import keras
import tensorflow as tf

from tfsnn.layers.filters import DualExpReadoutFilter


@keras.saving.register_keras_serializable(package="tfsnn")
class FilteredMSE(keras.losses.Loss):
    """MSE between ``filter(y_pred)`` and ``filter(y_true)``, both ``[B, T, N]`` spike trains,
    with the fixed normalised dual-exponential filter (``tau_m``, ``tau_s``); mean over B*T*N."""

    def __init__(self, tau_m=8.0, tau_s=2.0, name="filtered_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.tau_m, self.tau_s = float(tau_m), float(tau_s)
        self.filter = DualExpReadoutFilter(self.tau_m, self.tau_s)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        f_true = self.filter(tf.cast(y_true, y_pred.dtype))
        return tf.reduce_mean(tf.square(self.filter(y_pred) - f_true), axis=[1, 2])

    def get_config(self):
        return {**super().get_config(), "tau_m": self.tau_m, "tau_s": self.tau_s}


@keras.saving.register_keras_serializable(package="tfsnn")
class SumSquaredError(keras.losses.Loss):
    """``sum_batch sum_class (y_pred - onehot(y_true))^2`` for sparse integer labels."""

    def __init__(self, name="sum_squared_error", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)

    def call(self, y_true, y_pred):
        onehot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), tf.shape(y_pred)[-1],
                            dtype=y_pred.dtype)
        return tf.reduce_sum(tf.square(y_pred - onehot), axis=-1)

    def get_config(self):
        return {"name": self.name}

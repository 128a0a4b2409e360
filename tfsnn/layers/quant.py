"""Quantized layers of the ALL_INT_SNN ANN (docs/specs/all_int_snn.md §1, §6.1).

* ``QuantConv2D`` / ``QuantDepthwiseConv2D`` / ``QuantDense``: bias-free conv (any stride,
  padding, dilation) / depthwise conv / dense whose kernel passes through a weight quantizer
  (``"ternary"`` or None) on every forward pass; the latent float kernel is trained.
* ``QuantActivation``: the ``BatchNorm -> ReLU -> quantizer`` block (quantizer None: BN -> ReLU);
  ``batch_norm=False`` drops the BN (e.g. the ReLU after a residual sum), ``signed=True`` drops
  the ReLU and rounds to the ``2^-k`` grid on both sides of 0 (the BN branch entering an ``Add``).

Shapes are Keras' NHWC: conv inputs ``[batch, H, W, C]``, dense inputs ``[batch, features]``.
"""
import keras
import tensorflow as tf

from tfsnn import quantizers as q
from tfsnn.geometry import conv_output_length, pair

# Initializers of the original TensorLayer code (docs/specs/all_int_snn.md §1.2-1.3).
CONV_INIT = {"class_name": "TruncatedNormal", "config": {"stddev": 0.02}}
DENSE_INIT = {"class_name": "TruncatedNormal", "config": {"stddev": 0.1}}


class _QuantKernel(keras.layers.Layer):
    """Shared kernel handling: the latent kernel and its quantized view."""

    def __init__(self, kernel_quantizer=None, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_quantizer = q.get(kernel_quantizer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def quantized_kernel(self):
        """The kernel the forward pass uses (ternary values if a quantizer is set)."""
        k = self.kernel
        return k if self.kernel_quantizer is None else self.kernel_quantizer(k)

    def get_config(self):
        return {**super().get_config(),
                "kernel_quantizer": q.serialize(self.kernel_quantizer),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="tfsnn")
class QuantConv2D(_QuantKernel):
    """Bias-free 2-D convolution with a quantized kernel ``[kh, kw, C_in, filters]``."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid",
                 kernel_quantizer=None, kernel_initializer=CONV_INIT, dilation_rate=1, **kwargs):
        super().__init__(kernel_quantizer, kernel_initializer, **kwargs)
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.dilation_rate = pair(dilation_rate, "dilation_rate")
        if str(padding).lower() not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.padding = str(padding).lower()

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, int(input_shape[-1]), self.filters),
            initializer=self.kernel_initializer)

    def call(self, x):
        return tf.nn.conv2d(x, tf.cast(self.quantized_kernel(), x.dtype), strides=self.strides,
                            padding=self.padding.upper(), dilations=self.dilation_rate)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, *_conv_hw((h, w), self.kernel_size, self.strides, self.padding,
                             self.dilation_rate), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation_rate": self.dilation_rate}


def _conv_hw(hw, kernel_size, strides, padding, dilation_rate=(1, 1)):
    """Output ``(H', W')`` of a (dilated) conv: effective kernel ``d (k - 1) + 1``."""
    return tuple(conv_output_length(n, d * (k - 1) + 1, s, padding) for n, k, s, d in
                 zip(hw, kernel_size, strides, dilation_rate))


@keras.saving.register_keras_serializable(package="tfsnn")
class QuantDepthwiseConv2D(_QuantKernel):
    """Bias-free depthwise conv with a quantized kernel ``[kh, kw, C_in, depth_multiplier]``;
    output channels ``C_in * depth_multiplier`` (channel ``c * depth_multiplier + j``)."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1,
                 dilation_rate=1, kernel_quantizer=None, kernel_initializer=CONV_INIT, **kwargs):
        super().__init__(kernel_quantizer, kernel_initializer, **kwargs)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.dilation_rate = pair(dilation_rate, "dilation_rate")
        self.depth_multiplier = int(depth_multiplier)
        if self.depth_multiplier < 1:
            raise ValueError(f"depth_multiplier must be >= 1, got {depth_multiplier!r}")
        if str(padding).lower() not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.padding = str(padding).lower()

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, int(input_shape[-1]), self.depth_multiplier),
            initializer=self.kernel_initializer)

    def call(self, x):
        return tf.nn.depthwise_conv2d(x, tf.cast(self.quantized_kernel(), x.dtype),
                                      strides=(1, *self.strides, 1), padding=self.padding.upper(),
                                      dilations=self.dilation_rate)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, *_conv_hw((h, w), self.kernel_size, self.strides, self.padding,
                             self.dilation_rate), c * self.depth_multiplier)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "depth_multiplier": self.depth_multiplier,
                "dilation_rate": self.dilation_rate}


@keras.saving.register_keras_serializable(package="tfsnn")
class QuantDense(_QuantKernel):
    """Bias-free dense layer with a quantized kernel ``[features, units]``."""

    def __init__(self, units, kernel_quantizer=None, kernel_initializer=DENSE_INIT, **kwargs):
        super().__init__(kernel_quantizer, kernel_initializer, **kwargs)
        self.units = int(units)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.units),
                                      initializer=self.kernel_initializer)

    def call(self, x):
        return tf.matmul(x, tf.cast(self.quantized_kernel(), x.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tfsnn")
class QuantActivation(keras.layers.Layer):
    """``BatchNorm -> ReLU -> quantizer`` over the last (channel) axis.

    BN follows the original: momentum 0.9, epsilon 1e-5, gamma ~ N(1, 0.002), beta = 0.
    ``quantizer``: ``"k_level:K"``, ``"first_layer"``, a ``tfsnn.quantizers.Quantizer`` or None
    (full precision: plain ReLU). The BN sublayer is ``self.bn`` (None with ``batch_norm=False``).
    ``signed=True`` (a ``KLevel(k)`` quantizer only): ``floor(2^k u + 1/2) / 2^k`` without the
    ReLU, straight-through gradient (the branch of a residual sum, whose ReLU follows the ``Add``).
    """

    def __init__(self, quantizer=None, momentum=0.9, epsilon=1e-5, gamma_stddev=0.002,
                 batch_norm=True, signed=False, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = q.get(quantizer)
        self.momentum, self.epsilon, self.gamma_stddev = momentum, epsilon, gamma_stddev
        self.batch_norm, self.signed = bool(batch_norm), bool(signed)
        if self.signed and not isinstance(self.quantizer, q.KLevel):
            raise ValueError(f"signed=True needs a KLevel quantizer, got {self.quantizer!r}")
        self.bn = keras.layers.BatchNormalization(
            momentum=momentum, epsilon=epsilon,
            gamma_initializer=keras.initializers.RandomNormal(1.0, gamma_stddev),
            name="bn") if self.batch_norm else None

    def build(self, input_shape):
        if self.bn is not None:
            self.bn.build(input_shape)

    def call(self, x, training=None):
        u = x if self.bn is None else self.bn(x, training=training)
        if self.signed:
            s = tf.cast(2.0 ** self.quantizer.k, u.dtype)
            return u + tf.stop_gradient(tf.floor(u * s + 0.5) / s - u)
        return tf.nn.relu(u) if self.quantizer is None else self.quantizer(u)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "quantizer": q.serialize(self.quantizer),
                "momentum": self.momentum, "epsilon": self.epsilon,
                "gamma_stddev": self.gamma_stddev, "batch_norm": self.batch_norm,
                "signed": self.signed}


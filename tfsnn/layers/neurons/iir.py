"""The IIR spiking neuron (docs/specs/iir_and_proxy.md §A.2.4-§A.2.5, §C.2) and the proxy-learning
building blocks (§B.2-§B.3, §C.3).

IIR neuron (Fang et al. 2020), fed the filtered PSP ``y`` ``[B, T, ...]``::

    z[t] = W y[t] + bias            (Dense / Conv2D on all B*T frames at once)
    u[t] = z[t] - r[t-1]            (no membrane leak: the upstream membrane filter is off)
    s[t] = H(u[t] - threshold)      (strict: u = threshold gives no spike)
    r[t] = d r[t-1] + reset_amp s[t],   d = exp(-1/tau_m)

Only the reset recursion loops over time (``timeaxis.scan_time``: unrolled for short T, else
``tf.scan``).
The spike is the per-step surrogate op of
``tfsnn.surrogates``: the paper's surrogate is ``gaussian`` with ``sigma = 0.4`` and peak
``gamma = 1/(sqrt(2 pi) sigma)`` applied to ``u - threshold``, i.e. the N(u; threshold, sigma^2)
pdf (``iir_surrogate``). Gradients flow through the reset (not detached, as upstream).

Proxy learning (Kheradpisheh et al.): ``if_spikes`` is SpikingJelly's IF (``v += I``,
``s = 1[v >= theta]``, hard reset to 0), forward only; ``ProxyBatchNorm`` owns one gamma/beta and
two sets of moving statistics (``ann`` / ``snn`` branches).
"""
import math

import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.geometry import conv_output_length
from tfsnn.layers.filters import StatefulSequenceLayer
from tfsnn.timeaxis import fold_time, scan_time, unfold_time


def iir_surrogate(sigma=0.4):
    """The IIR paper's surrogate: ``gaussian`` with ``gamma = 1/(sqrt(2 pi) sigma)``, so that
    ``ds/du = N(u; threshold, sigma^2)`` (0.997356 at the threshold for sigma = 0.4)."""
    return sg.get("gaussian", gamma=1.0 / (math.sqrt(2.0 * math.pi) * sigma), sigma=sigma)


def spike_gaussian(u, threshold=1.0, sigma=0.4):
    """``H(u - threshold)`` (strict) with the Gaussian-pdf surrogate gradient."""
    return iir_surrogate(sigma).spike(u - threshold)


def iir_neuron(z, decay, threshold=1.0, reset_amp=1.0, surrogate=None, initial_state=None):
    """Spikes ``[B, T, ...]`` of the IIR neuron driven by ``z`` ``[B, T, ...]``.

    ``initial_state``: ``[r[-1]]`` ``[B, ...]`` (zeros if None). Returns ``(s, [r[T-1]])``.
    """
    sur = surrogate or iir_surrogate()
    r0 = tf.zeros_like(z[:, 0]) if initial_state is None else tf.cast(initial_state[0], z.dtype)

    def step(r, z_t):
        s = sur.spike(z_t - r - threshold)
        return decay * r + reset_amp * s, s

    ss, r_last = scan_time(step, z, r0)
    return ss, [r_last]


def torch_kernel_init():
    """PyTorch's default Linear/Conv kernel init ``U(+-1/sqrt(fan_in))``."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


class _IIRNeuronBase(StatefulSequenceLayer):
    """Synaptic op on folded frames + the IIR neuron recurrence; state ``[r]``."""

    def __init__(self, tau_m=4.0, threshold=1.0, reset_amp=1.0, sigma=0.4, use_bias=True,
                 kernel_initializer=None, bias_initializer=None, state="zero", batch_size=None,
                 **kwargs):
        super().__init__(state, batch_size, **kwargs)
        if not tau_m > 0:
            raise ValueError(f"tau_m must be > 0, got {tau_m!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.tau_m, self.threshold = float(tau_m), float(threshold)
        self.reset_amp, self.sigma = float(reset_amp), float(sigma)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or torch_kernel_init())
        self.bias_initializer = (None if bias_initializer is None
                                 else keras.initializers.get(bias_initializer))
        self.surrogate = iir_surrogate(self.sigma)

    @property
    def decay(self):
        return math.exp(-1.0 / self.tau_m)

    def _add_kernel_bias(self, kernel_shape, fan_in, units):
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape,
                                      initializer=self.kernel_initializer)
        if self.use_bias:
            lim = 1.0 / math.sqrt(fan_in)  # PyTorch's bias init, fan-in aware
            init = self.bias_initializer or keras.initializers.RandomUniform(-lim, lim)
            self.bias = self.add_weight(name="bias", shape=(units,), initializer=init)

    def synapse(self, frames):
        raise NotImplementedError

    def run(self, x, initial_state):
        b, t = tf.shape(x)[0], tf.shape(x)[1]
        z = self.synapse(fold_time(x))
        if self.use_bias:
            z = z + tf.cast(self.bias, z.dtype)
        z = unfold_time(z, b, t)
        return iir_neuron(z, self.decay, self.threshold, self.reset_amp, self.surrogate,
                          initial_state)

    def get_config(self):
        return {**super().get_config(), "tau_m": self.tau_m, "threshold": self.threshold,
                "reset_amp": self.reset_amp, "sigma": self.sigma, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": (None if self.bias_initializer is None else
                                     keras.initializers.serialize(self.bias_initializer))}


@keras.saving.register_keras_serializable(package="tfsnn")
class IIRSpikingDense(_IIRNeuronBase):
    """IIR spiking neurons with a dense synapse: PSP ``[B, T, N]`` -> spikes ``[B, T, units]``.
    Kernel ``[N, units]`` and bias init as PyTorch's Linear (``bias_initializer=None``)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def state_shapes(self, input_shape):
        return [(self.units,)]

    def build(self, input_shape):
        n = int(input_shape[-1])
        self._add_kernel_bias((n, self.units), n, self.units)
        self.build_state(input_shape)

    def synapse(self, frames):
        return tf.matmul(frames, tf.cast(self.kernel, frames.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tfsnn")
class IIRSpikingConv2D(_IIRNeuronBase):
    """IIR spiking neurons with a conv synapse: PSP ``[B, T, H, W, C]`` -> spikes
    ``[B, T, H', W', filters]``; kernel ``[k, k, C, filters]``, PyTorch-style init."""

    def __init__(self, filters, kernel_size=3, strides=1, padding="same", **kwargs):
        super().__init__(**kwargs)
        if str(padding).lower() not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.strides, self.padding = int(strides), str(padding).lower()

    def _out_hw(self, input_shape):
        return [conv_output_length(d, self.kernel_size, self.strides, self.padding)
                for d in input_shape[2:4]]

    def state_shapes(self, input_shape):
        return [(*self._out_hw(input_shape), self.filters)]

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"{self.name}: input must be [B, T, H, W, C], got {input_shape}")
        c = int(input_shape[-1])
        k = self.kernel_size
        self._add_kernel_bias((k, k, c, self.filters), c * k * k, self.filters)
        self.build_state(input_shape)

    def synapse(self, frames):
        return tf.nn.conv2d(frames, tf.cast(self.kernel, frames.dtype), self.strides,
                            self.padding.upper())

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], *self._out_hw(input_shape), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


@keras.saving.register_keras_serializable(package="tfsnn")
class PSPMaxPool2D(keras.layers.Layer):
    """Per-step max pool ``[B, T, H, W, C] -> [B, T, H', W', C]`` (on the PSP in the IIR nets, on
    spikes in the proxy net, where it is a logical OR). ``padding``: int, PyTorch-style implicit
    -inf border on each side."""

    def __init__(self, pool_size=2, strides=None, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = int(strides or pool_size)
        self.padding = int(padding)

    def call(self, x):
        s = tf.shape(x)
        frames = fold_time(x)
        if self.padding:
            p = self.padding
            frames = tf.pad(frames, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=-math.inf)
        y = tf.nn.max_pool2d(frames, self.pool_size, self.strides, "VALID")
        return unfold_time(y, s[0], s[1])

    def compute_output_shape(self, input_shape):
        hw = [conv_output_length(None if d is None else d + 2 * self.padding, self.pool_size,
                                 self.strides, "valid") for d in input_shape[2:4]]
        return (*input_shape[:2], *hw, input_shape[4])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


# --------------------------------------------------------------------------- proxy learning


"""Layers of the integer SNN of ALL_INT_SNN (docs/specs/all_int_snn.md §2, §6.5), built by
``tfsnn.convert.convert``.

Tensors are ``[batch, time, ...]`` (time axis 1). Synaptic ops (conv, dense) run on all
``batch*time`` frames at once; only the neuron recurrence loops over time (zero synaptic delay,
so layer-by-layer over the whole time axis gives exactly the spikes of step-by-step simulation).

* ``SpikeEncoder``: the encoding layer. A full-precision conv of the analog image, held for all
  steps (input injected at t=0 only, non-leaky, never reset). With per-channel thresholds
  ``theta_1 <= ... <= theta_M`` (``M`` = the first-layer quantizer's top level, 4) its level is
  ``L = #{m: z >= theta_m}`` and it emits ``L`` spikes of amplitude ``2^k`` on steps ``0..L-1``
  (the threshold ramp of docs/specs/all_int_snn.md §2.2: the threshold rises one step per time step).
* ``SpikingConv2D``: a hidden layer: conv synapses + the signed dynamic-threshold neuron.
* ``DynamicThresholdNeuron``: the neuron alone (membrane in, spikes out).
* ``OutputAccumulator``: the non-spiking output layer ``y_t = flatten(n_t) @ W`` with ``n_t``
  the cumulative net spike count of the last hidden layer; ``y = 2^k * ANN logits`` at convergence.

The signed dynamic-threshold neuron (docs/specs/all_int_snn.md §2.3 with the tie rule of §6.5). The membrane is a
non-leaky integrator without reset, ``V_t = V_{t-1} + sum_j w_j s_{j,t} = sum_j w_j n_{j,t}``
(``n_j`` the input's cumulative net count). With net count ``n`` and per-channel thresholds
``theta_1 <= theta_2 <= ...`` (``theta_0 = -inf``, the ReLU floor) it fires

    +1  if V_t >= theta_{n+1}        -1  if V_t < theta_n        0 otherwise,

and the dynamic thresholds move with ``n``. Since the thresholds increase in ``m``, this equals
``s_t = clip(L(V_t) - n_{t-1}, -1, 1)`` with the target level ``L(V) = #{m >= 1: V >= theta_m}``,
which is how it is computed: ``L`` for all frames by a per-channel ``searchsorted``, then a cheap
elementwise recurrence. The unique fixed point is ``n = L(V)`` (= 2^k x the quantized ANN
activation), reached by +-1 per step. A threshold table holds ``M = num_levels`` thresholds per
channel; it gives exact dynamics for ``T <= M`` steps (a count cannot exceed ``t+1``).

Integer mode (``use_int=True``): kernels are int32 {-1,0,1} (or any integers), thresholds int32,
membranes int32. The conv itself runs in float32 on exact integers: every operand is an integer
and every partial sum is bounded by ``max_c sum|W[:, c]| * max|n_in| < 2^24`` (checked at run
time), so every float32 addition is exact and the result is cast to int32 without rounding.
Float mode (``use_int=False``): float32 kernels, float64 thresholds, membranes compared in float64.

Event-driven shortcut (exact): a layer whose input has no event after step ``t_e`` has a
constant membrane from ``t_e`` on, so the conv runs on frames ``0..t_e-1`` only and the
recurrence's tail has a closed form (``n`` moves toward the constant ``L`` by one per step,
then the layer is silent). Each layer's ``compact(spikes, timesteps)`` passes only the frames up
to its last possible event (``[B, t_c, ...]``, later frames silent); ``call`` pads to ``T``.
``tfsnn.simulate`` chains the compact forms, so its cost follows the active steps, not ``T``.
"""
import keras
import numpy as np
import tensorflow as tf


from tfsnn.geometry import conv_output_length, pair
from tfsnn.timeaxis import cumsum_time, fold_time, pad_time, to_time_major, unfold_time
_MAX_EXACT = 2 ** 24  # float32 represents every integer of magnitude <= 2^24 exactly


# ----------------------------------------------------------------------------- functions

def target_levels(v, thresholds):
    """``L = #{m: v >= thresholds[c, m]}`` per channel.

    Args:
      v: membrane ``[..., C]`` (int32 with int32 thresholds, else cast to the thresholds' dtype).
      thresholds: ``[C, M]``, non-decreasing along ``M``.
    Returns:
      int32 levels in ``0..M``, shape of ``v``.
    """
    shape = tf.shape(v)
    c = tf.shape(thresholds)[0]
    flat = tf.transpose(tf.reshape(tf.cast(v, thresholds.dtype), [-1, c]))  # [C, N]
    lev = tf.searchsorted(thresholds, flat, side="right", out_type=tf.int32)
    return tf.reshape(tf.transpose(lev), shape)


def signed_spikes(levels, num_steps=None):
    """Spikes of the signed dynamic-threshold neuron for target levels ``L_t`` (see
    ``signed_counts``): ``s_t = clip(L_t - n_{t-1}, -1, 1)``.

    Args:
      levels: int32 ``[B, t_e, ...]``; later frames are taken equal to the last one.
      num_steps: total ``T >= t_e`` (default ``t_e``); the tail has the closed form
        ``s_{t_e-1+j} = sign(d) [j <= |d|]``, ``d = L_last - n_last``.
    Returns:
      int32 spikes ``[B, T, ...]`` in ``{-1, 0, 1}``.
    """
    s, n_last = _scan_spikes(levels)
    if num_steps is None:
        return s
    return tf.concat([s, _tail_spikes(levels[:, -1] - n_last, num_steps - tf.shape(s)[1])], 1)


def _scan_spikes(levels):
    """The recurrence over the given frames: spikes ``[B, t_e, ...]`` and final counts."""
    lev_tm = to_time_major(levels)  # time-major [t_e, B, ...]

    def step(state, lev):
        n, _ = state
        s = tf.clip_by_value(lev - n, -1, 1)
        return n + s, s

    zeros = tf.zeros_like(lev_tm[0])
    n_tm, s_tm = tf.scan(step, lev_tm, initializer=(zeros, zeros))
    return to_time_major(s_tm), n_tm[-1]


def _tail_spikes(d, rest):
    """Spikes ``[B, rest, ...]`` toward a constant target ``d`` away: ``sign(d) [j <= |d|]``."""
    d = d[:, None]
    j = tf.range(1, rest + 1, dtype=d.dtype)
    j = tf.reshape(j, tf.concat([[1, -1], tf.ones([tf.rank(d) - 2], tf.int32)], 0))
    return tf.sign(d) * tf.cast(j <= tf.abs(d), d.dtype)


def active_length(spikes):
    """1 + the last step (axis 1) with any nonzero spike in the batch; at least 1. int32."""
    axes = [0] + list(range(2, spikes.shape.rank))
    any_t = tf.reduce_any(tf.not_equal(spikes, 0), axis=axes)
    idx = tf.cast(tf.where(any_t)[:, 0], tf.int32)
    return tf.maximum(tf.reduce_max(tf.concat([idx, [-1]], 0)) + 1, 1)


# ----------------------------------------------------------------------------- layers

class _SpikingBase(keras.layers.Layer):
    def __init__(self, use_int=True, **kwargs):
        super().__init__(trainable=kwargs.pop("trainable", False), **kwargs)
        self.use_int = bool(use_int)

    @property
    def spike_dtype(self):
        """int32 in integer mode, float32 otherwise (values are exact small integers)."""
        return "int32" if self.use_int else "float32"

    def compute_output_spec(self, x, *args, **kwargs):
        return keras.KerasTensor(self.compute_output_shape(x.shape), dtype=self.spike_dtype)

    def get_config(self):
        return {**super().get_config(), "use_int": self.use_int}


@keras.saving.register_keras_serializable(package="tfsnn")
class SpikeEncoder(_SpikingBase):
    """Encoding layer: FP conv of the analog image + threshold-ramp burst of ``2^k`` spikes.

    Input: images ``[B, H, W, C_in]`` (float, injected at t=0). Output: spikes
    ``[B, T, H', W', filters]`` with values in ``{0, amplitude}``; ``amplitude = 2^k``.
    Weights: ``kernel [kh, kw, C_in, filters]`` float32 (sign-folded, see ``convert``),
    ``thresholds [filters, levels]`` float32 in units of the conv output.
    """

    spiking_output = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", levels=4, amplitude=1,
                 timesteps=32, use_int=True, **kwargs):
        super().__init__(use_int=use_int, **kwargs)
        self.filters, self.levels = int(filters), int(levels)
        self.kernel_size, self.strides = pair(kernel_size), pair(strides)
        self.padding = str(padding).lower()
        self.amplitude, self.timesteps = int(amplitude), int(timesteps)
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps!r}")

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", trainable=False, initializer="zeros",
                                      shape=(*self.kernel_size, int(input_shape[-1]), self.filters))
        self.thresholds = self.add_weight(name="thresholds", trainable=False, initializer="zeros",
                                          shape=(self.filters, self.levels))

    def membrane(self, images):
        """The (constant) membrane ``z = conv(x, W)``, float32 ``[B, H', W', filters]``."""
        return tf.nn.conv2d(tf.cast(images, tf.float32), tf.cast(self.kernel, tf.float32),
                            self.strides, self.padding.upper())

    def level(self, images):
        """Encoder level ``L = #{m: z >= theta_m}`` in ``0..levels``, int32."""
        return target_levels(self.membrane(images), tf.cast(self.thresholds, tf.float32))

    def compact(self, images, timesteps=None):
        """Spikes of the first ``t_c`` steps only, ``[B, t_c, H', W', filters]``, where every
        later step (up to ``timesteps``) is silent; ``1 <= t_c <= timesteps``."""
        t = self.timesteps if timesteps is None else timesteps
        lev = self.level(images)[:, None]  # [B, 1, H, W, C]
        t_c = tf.clip_by_value(tf.reduce_max(lev), 1, t)
        steps = tf.reshape(tf.range(t_c, dtype=tf.int32), [1, -1, 1, 1, 1])
        return tf.cast(steps < lev, self.spike_dtype) * tf.cast(self.amplitude, self.spike_dtype)

    def call(self, images, timesteps=None):
        t = self.timesteps if timesteps is None else int(timesteps)
        return pad_time(self.compact(images, t), t)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        hw = (conv_output_length(n, k, s, self.padding) for n, k, s in
              zip((h, w), self.kernel_size, self.strides))
        return (b, self.timesteps, *hw, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "levels": self.levels,
                "amplitude": self.amplitude, "timesteps": self.timesteps}


@keras.saving.register_keras_serializable(package="tfsnn")
class DynamicThresholdNeuron(_SpikingBase):
    """The signed dynamic-threshold neuron alone (see the module docstring).

    Input: membrane ``[B, T, ..., C]`` (integers in integer mode). Output: spikes in
    ``{-1, 0, 1}``, same shape. Weight: ``thresholds [C, num_levels]`` (int32 in integer mode,
    float64 otherwise).
    """

    def __init__(self, channels, num_levels, use_int=True, **kwargs):
        super().__init__(use_int=use_int, **kwargs)
        self.channels, self.num_levels = int(channels), int(num_levels)

    def build(self, input_shape):
        self.thresholds = self.add_weight(
            name="thresholds", shape=(self.channels, self.num_levels), trainable=False,
            initializer="zeros", dtype="int32" if self.use_int else "float64")

    def call(self, v):
        return tf.cast(signed_spikes(target_levels(v, self.thresholds)), self.spike_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_levels": self.num_levels}


@keras.saving.register_keras_serializable(package="tfsnn")
class SpikingConv2D(_SpikingBase):
    """Hidden layer: conv synapses + signed dynamic-threshold neurons.

    Input: spikes ``[B, T, H, W, C_in]``; output: spikes ``[B, T, H', W', filters]`` in
    ``{-1, 0, 1}``. Weights: ``kernel [kh, kw, C_in, filters]`` (int32 in integer mode, else
    float32), ``thresholds [filters, num_levels]`` (int32 / float64), in membrane units
    (``V = 2^k z`` with ``z`` the ANN pre-activation).
    """

    spiking_output = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", num_levels=32,
                 use_int=True, **kwargs):
        super().__init__(use_int=use_int, **kwargs)
        self.filters, self.num_levels = int(filters), int(num_levels)
        self.kernel_size, self.strides = pair(kernel_size), pair(strides)
        self.padding = str(padding).lower()

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, int(input_shape[-1]), self.filters),
            trainable=False, initializer="zeros", dtype="int32" if self.use_int else "float32")
        self.thresholds = self.add_weight(
            name="thresholds", shape=(self.filters, self.num_levels), trainable=False,
            initializer="zeros", dtype="int32" if self.use_int else "float64")

    def membrane_from_counts(self, counts):
        """``V = conv(counts, W)`` for counts ``[N, H, W, C_in]``: int32 (integer mode, exact)
        or float32."""
        w = tf.cast(self.kernel, tf.float32)
        counts = tf.cast(counts, tf.float32)
        v = tf.nn.conv2d(counts, w, self.strides, self.padding.upper())
        if not self.use_int:
            return v
        bound = (tf.reduce_max(tf.reduce_sum(tf.abs(w), axis=[0, 1, 2]))
                 * tf.reduce_max(tf.abs(counts)))
        tf.debugging.assert_less_equal(
            bound, float(_MAX_EXACT),
            message=f"{self.name}: integer membrane bound exceeds 2^24, float32 conv not exact")
        return tf.cast(v, tf.int32)

    def levels_from_counts(self, counts):
        """Target levels ``L(conv(counts))`` (the threshold-form quantized ANN), int32."""
        return target_levels(self.membrane_from_counts(counts), self.thresholds)

    def compact(self, spikes, timesteps):
        """Event-driven form of ``call``: ``spikes [B, t_in, ...]`` are the first ``t_in`` steps
        of the input (later steps up to ``timesteps`` silent); returns the output's first ``t_c``
        steps ``[B, t_c, ...]`` (later steps silent), ``t_in <= t_c <= timesteps``.

        After frame ``t_in - 1`` the membrane is constant, so the conv runs on ``t_in`` frames
        and the count then moves to the constant target by one per step (closed form).
        """
        b = tf.shape(spikes)[0]
        counts = cumsum_time(tf.cast(spikes, tf.float32))
        lev = unfold_time(self.levels_from_counts(fold_time(counts)), b)
        s, n_last = _scan_spikes(lev)
        d = lev[:, -1] - n_last  # the count still moves |d| steps after the last input frame
        t_in = tf.shape(spikes)[1]
        rest = tf.minimum(t_in + tf.reduce_max(tf.abs(d)), timesteps) - t_in
        return tf.cast(tf.concat([s, _tail_spikes(d, rest)], axis=1), self.spike_dtype)

    def call(self, spikes):
        t = tf.shape(spikes)[1]
        t_e = active_length(spikes)  # frames >= t_e see the same input count as t_e - 1
        return pad_time(self.compact(spikes[:, :t_e], t), t)

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = input_shape
        hw = (conv_output_length(n, k, s, self.padding) for n, k, s in
              zip((h, w), self.kernel_size, self.strides))
        return (b, t, *hw, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "num_levels": self.num_levels}


@keras.saving.register_keras_serializable(package="tfsnn")
class OutputAccumulator(keras.layers.Layer):
    """Non-spiking output layer: ``y_t = flatten(n_t) @ W`` (no bias), ``n_t`` the cumulative
    net count of the input spikes.

    Input: spikes ``[B, T, ...]``; output: float32 logits ``[B, T, units]`` (``2^k`` x the ANN
    logits at convergence). Weight: ``kernel [features, units]`` float32 (full precision).
    """

    def __init__(self, units, **kwargs):
        super().__init__(trainable=kwargs.pop("trainable", False), **kwargs)
        self.units = int(units)

    def build(self, input_shape):
        feat = int(np.prod(input_shape[2:]))
        self.kernel = self.add_weight(name="kernel", shape=(feat, self.units), trainable=False,
                                      initializer="zeros")

    def call(self, spikes):
        b, t = tf.shape(spikes)[0], tf.shape(spikes)[1]
        counts = cumsum_time(tf.cast(spikes, tf.float32))
        y = tf.matmul(tf.reshape(counts, [b * t, -1]), tf.cast(self.kernel, tf.float32))
        return tf.reshape(y, [b, t, self.units])

    def compact(self, spikes, timesteps):
        """Logits ``[B, timesteps, units]`` from the input's first ``t_in`` steps
        ``[B, t_in, ...]`` (later steps silent, so the logits hold their last value)."""
        return pad_time(self.call(spikes), timesteps, mode="hold")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units)

    def compute_output_spec(self, x, *args, **kwargs):
        return keras.KerasTensor(self.compute_output_shape(x.shape), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "units": self.units}


# ----------------------------------------------------------------------------- graph layers
# Layers of SNNs converted from any quantize_model twin (tfsnn.conversion.rules). Edges carry
# per-step increments ``[B, t, ...]`` (spikes, or membrane increments after a synapse); every
# layer has ``compact(inputs, timesteps)`` (inputs' first ``t_in`` steps, later ones silent).

def _join_lengths(xs):
    """Pad compact inputs ``[B, t_i, ...]`` with silent steps to their common length."""
    t = tf.reduce_max(tf.stack([tf.shape(x)[1] for x in xs]))
    return [pad_time(x, t) for x in xs]


@keras.saving.register_keras_serializable(package="tfsnn")
class RampEncoder(_SpikingBase):
    """Encoder of an analog membrane ``z [B, ..., C]`` (the twin's own float first synapse):
    level ``L = #{m: sign_c z >= theta_m}`` in ``0..levels``, emitted as ``L`` spikes of
    amplitude ``2^k`` on steps ``0..L-1``. Weights: ``thresholds [C, levels]`` float32,
    ``signs [C]`` float32 (-1 where the BN's gamma < 0). Output ``[B, T, ..., C]``."""

    spiking_output = True

    def __init__(self, channels, levels=4, amplitude=1, timesteps=32, use_int=True, **kwargs):
        super().__init__(use_int=use_int, **kwargs)
        self.channels, self.levels = int(channels), int(levels)
        self.amplitude, self.timesteps = int(amplitude), int(timesteps)

    def build(self, input_shape):
        self.thresholds = self.add_weight(name="thresholds", shape=(self.channels, self.levels),
                                          trainable=False, initializer="zeros")
        self.signs = self.add_weight(name="signs", shape=(self.channels,), trainable=False,
                                     initializer="ones")

    def level(self, z):
        return target_levels(tf.cast(z, tf.float32) * self.signs, self.thresholds)

    def compact(self, z, timesteps=None):
        t = self.timesteps if timesteps is None else timesteps
        lev = self.level(z)[:, None]
        t_c = tf.clip_by_value(tf.reduce_max(lev), 1, t)
        steps = tf.reshape(tf.range(t_c), [1, -1] + [1] * (len(z.shape) - 1))
        return tf.cast(steps < lev, self.spike_dtype) * tf.cast(self.amplitude, self.spike_dtype)

    def call(self, z):
        return pad_time(self.compact(z, self.timesteps), self.timesteps)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.timesteps, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "levels": self.levels,
                "amplitude": self.amplitude, "timesteps": self.timesteps}


@keras.saving.register_keras_serializable(package="tfsnn")
class IntegerSynapse(_SpikingBase):
    """Integer synapses on increments ``[B, t, ...]`` -> membrane increments (int32 in integer
    mode): ``op`` = ``"conv"`` (``[kh, kw, C_in, filters]``), ``"depthwise"``
    (``[kh, kw, C_in, depth_multiplier]``) or ``"dense"`` (``[features, units]``), any stride,
    padding and dilation. Runs in float32 on exact integers (bound checked, < 2^24)."""

    def __init__(self, op, kernel_shape, strides=1, padding="valid", dilation_rate=1,
                 use_int=True, **kwargs):
        super().__init__(use_int=use_int, **kwargs)
        if op not in ("conv", "depthwise", "dense"):
            raise ValueError(f"op must be 'conv', 'depthwise' or 'dense', got {op!r}")
        self.op, self.kernel_shape = op, tuple(int(d) for d in kernel_shape)
        self.strides, self.dilation_rate = pair(strides), pair(dilation_rate)
        self.padding = str(padding).lower()

    @property
    def kernel_size(self):
        return self.kernel_shape[:2]

    @property
    def filters(self):
        return self.kernel_shape[-1]

    @property
    def units(self):
        return self.kernel_shape[-1]

    @property
    def depth_multiplier(self):
        return self.kernel_shape[-1]

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_shape, trainable=False,
                                      initializer="zeros",
                                      dtype="int32" if self.use_int else "float32")

    def apply_frames(self, x):
        """The synaptic op on frames ``[N, ...]`` (float32 values); same dtype rules as ``call``."""
        w = tf.cast(self.kernel, tf.float32)
        x = tf.cast(x, tf.float32)
        if self.op == "dense":
            v = tf.matmul(x, w)
            col = tf.reduce_sum(tf.abs(w), axis=0)
        elif self.op == "conv":
            v = tf.nn.conv2d(x, w, self.strides, self.padding.upper(), dilations=self.dilation_rate)
            col = tf.reduce_sum(tf.abs(w), axis=[0, 1, 2])
        else:
            v = tf.nn.depthwise_conv2d(x, w, (1, *self.strides, 1), self.padding.upper(),
                                       dilations=self.dilation_rate)
            col = tf.reduce_sum(tf.abs(w), axis=[0, 1])
        if not self.use_int:
            return v
        tf.debugging.assert_less_equal(
            tf.reduce_max(col) * tf.reduce_max(tf.abs(x)), float(_MAX_EXACT),
            message=f"{self.name}: integer membrane bound exceeds 2^24, float32 op not exact")
        return tf.cast(v, tf.int32)

    def compact(self, x, timesteps=None):
        b = tf.shape(x)[0]
        return unfold_time(self.apply_frames(fold_time(x)), b)

    def call(self, x):
        return self.compact(x)

    def compute_output_shape(self, input_shape):
        b, t = input_shape[:2]
        if self.op == "dense":
            return (b, t, self.kernel_shape[-1])
        hw = (conv_output_length(n, d * (k - 1) + 1, s, self.padding) for n, k, s, d in
              zip(input_shape[2:4], self.kernel_size, self.strides, self.dilation_rate))
        c = self.filters if self.op == "conv" else input_shape[-1] * self.depth_multiplier
        return (b, t, *hw, c)

    def get_config(self):
        return {**super().get_config(), "op": self.op, "kernel_shape": self.kernel_shape,
                "strides": self.strides, "padding": self.padding,
                "dilation_rate": self.dilation_rate}


@keras.saving.register_keras_serializable(package="tfsnn")
class SpikingNeuron(_SpikingBase):
    """Signed dynamic-threshold neurons on membrane increments ``[B, t, ..., C]``: ``V_t`` = their
    running sum, target level ``L = min_level + #{m: sign_c V_t >= theta_m}``, spikes
    ``clip(L_t - n_{t-1}, -1, 1)`` (see the module docstring). ``min_level = -num_levels / 2``
    for signed neurons (a residual branch). Weights ``thresholds [C, num_levels]``, ``signs [C]``
    (int32 in integer mode)."""

    spiking_output = True

    def __init__(self, channels, num_levels, min_level=0, use_int=True, **kwargs):
        super().__init__(use_int=use_int, **kwargs)
        self.channels, self.num_levels = int(channels), int(num_levels)
        self.min_level = int(min_level)

    @property
    def max_steps(self):
        """Steps for which the threshold table is exact (a count moves one per step)."""
        return min(self.num_levels + self.min_level, self.num_levels if self.min_level == 0
                   else -self.min_level)

    def build(self, input_shape):
        dt = "int32" if self.use_int else "float64"
        self.thresholds = self.add_weight(name="thresholds", trainable=False, initializer="zeros",
                                          shape=(self.channels, self.num_levels), dtype=dt)
        self.signs = self.add_weight(name="signs", shape=(self.channels,), trainable=False,
                                     initializer="ones", dtype=dt)

    def levels_from_membrane(self, v):
        return target_levels(v * tf.cast(self.signs, v.dtype), self.thresholds) + self.min_level

    def compact(self, x, timesteps):
        v = tf.cumsum(tf.cast(x, "int32" if self.use_int else "float64"), axis=1)
        lev = self.levels_from_membrane(v)
        s, n_last = _scan_spikes(lev)
        d = lev[:, -1] - n_last
        t_in = tf.shape(x)[1]
        rest = tf.minimum(t_in + tf.reduce_max(tf.abs(d)), timesteps) - t_in
        return tf.cast(tf.concat([s, _tail_spikes(d, rest)], axis=1), self.spike_dtype)

    def call(self, x):
        t = tf.shape(x)[1]
        return pad_time(self.compact(x[:, :active_length(x)], t), t)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_levels": self.num_levels,
                "min_level": self.min_level}


@keras.saving.register_keras_serializable(package="tfsnn")
class SpikeOp(_SpikingBase):
    """Parameter-free ops on increments ``[B, t, ...]``, exact on integers:

    * ``"maxpool"``: max pooling of the running counts, re-emitted as increments (the count of
      the max follows the largest input count; +-1 per step for +-1 inputs);
    * ``"sumpool"``: window sums (an average pool whose ``1/area`` is folded into the next
      neuron's thresholds); ``"zeropad"``; ``"reshape"`` (``target_shape`` per frame);
      ``"add"`` / ``"concat"`` (several inputs, time lengths padded to the longest).
    ``args``: ``pool_size``, ``strides``, ``padding`` (pools), ``padding`` (zeropad, pairs),
    ``target_shape`` (reshape), ``axis`` (concat, of the frame, negative).
    """

    KINDS = ("maxpool", "sumpool", "zeropad", "reshape", "add", "concat")

    def __init__(self, kind, args=None, use_int=True, **kwargs):
        super().__init__(use_int=use_int, **kwargs)
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        self.kind, self.args = kind, dict(args or {})

    def _frames(self, x):
        a = self.args
        if self.kind in ("maxpool", "sumpool"):
            p, s = list(pair(a["pool_size"])), list(pair(a["strides"]))
            pad = a["padding"].upper()
            if self.kind == "maxpool":
                return tf.nn.max_pool2d(x, p, s, pad)
            c = x.shape[-1]
            ones = tf.ones([*p, c, 1], x.dtype)
            return tf.nn.depthwise_conv2d(x, ones, [1, *s, 1], pad)
        if self.kind == "zeropad":
            (t, b), (l, r) = a["padding"]
            return tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])
        if self.kind == "reshape":
            return tf.reshape(x, [tf.shape(x)[0], *a["target_shape"]])
        raise AssertionError(self.kind)

    def compact(self, xs, timesteps=None):
        if self.kind in ("add", "concat"):
            xs = _join_lengths(list(xs))
            if self.kind == "add":
                return tf.add_n(xs)
            return tf.concat(xs, axis=self.args.get("axis", -1))
        x = xs[0] if isinstance(xs, (list, tuple)) else xs
        dt = x.dtype
        b = tf.shape(x)[0]
        if self.kind == "maxpool":  # on the running counts, then back to increments
            n = tf.cumsum(tf.cast(x, tf.float32), axis=1)
            m = unfold_time(self._frames(fold_time(n)), b)
            prev = tf.pad(m[:, :-1], [[0, 0], [1, 0]] + [[0, 0]] * (len(m.shape) - 2))
            return tf.cast(m - prev, dt)
        return tf.cast(unfold_time(self._frames(fold_time(tf.cast(x, tf.float32))), b), dt)

    def call(self, xs):
        return self.compact(xs)

    def compute_output_spec(self, xs, *args, **kwargs):
        xs = xs if isinstance(xs, (list, tuple)) else [xs]
        if self.kind in ("add", "concat"):
            shape = list(xs[0].shape)
            if self.kind == "concat":
                ax = self.args.get("axis", -1)
                shape[ax] = sum(int(x.shape[ax]) for x in xs)
            return keras.KerasTensor(tuple(shape), dtype=xs[0].dtype)
        b, t = xs[0].shape[:2]
        frame = tf.zeros([1, *xs[0].shape[2:]], tf.float32)
        out = self._frames(frame).shape[1:]
        return keras.KerasTensor((b, t, *out), dtype=xs[0].dtype)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "args": self.args}


@keras.saving.register_keras_serializable(package="tfsnn")
class OutputHead(keras.layers.Layer):
    """Non-spiking output: the quantized twin's own float head (e.g. ``GAP -> Dense``, bias
    included) evaluated at every step on the running counts of its inputs divided by ``2^k``
    (exactly the ANN levels at convergence), times ``2^k``: logits ``[B, T, classes]`` float32,
    ``2^k`` x the ANN's at convergence. ``head``: a Keras model (serialized in the config)."""

    def __init__(self, head, amplitude=1, **kwargs):
        super().__init__(trainable=kwargs.pop("trainable", False), **kwargs)
        if isinstance(head, dict):
            head = keras.saving.deserialize_keras_object(head)
        self.head, self.amplitude = head, int(amplitude)
        self.units = int(head.output.shape[-1])

    def build(self, input_shape):
        self.built = True

    def compact(self, xs, timesteps):
        xs = _join_lengths(list(xs) if isinstance(xs, (list, tuple)) else [xs])
        b = tf.shape(xs[0])[0]
        lv = [fold_time(tf.cumsum(tf.cast(x, tf.float32), axis=1) / float(self.amplitude))
              for x in xs]
        y = self.head(lv if len(lv) > 1 else lv[0], training=False) * float(self.amplitude)
        return pad_time(unfold_time(y, b), timesteps, mode="hold")

    def call(self, xs):
        x0 = xs[0] if isinstance(xs, (list, tuple)) else xs
        return self.compact(xs, tf.shape(x0)[1])

    def compute_output_spec(self, xs, *args, **kwargs):
        x0 = xs[0] if isinstance(xs, (list, tuple)) else xs
        return keras.KerasTensor((x0.shape[0], x0.shape[1], self.units), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "head": keras.saving.serialize_keras_object(self.head),
                "amplitude": self.amplitude}

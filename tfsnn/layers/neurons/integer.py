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

"""IIR synapse filters of the IIR-SNN method (docs/specs/iir_and_proxy.md §A.2.1-§A.2.3, §C.2).

Tensors are ``[batch, time, ...]``; every filter runs elementwise over axis 1 (one filter per
input element, shared by all its targets: an "axon" filter). The filters are linear, so the
recurrence is ``timeaxis.scan_time`` (Python-unrolled for short static T) and autodiff
through it gives the exact coefficient gradients.

* ``DualExpIIR(tau_m, tau_s)``: ``y[t] = a1*y[t-1] + a2*y[t-2] + b1*x[t]`` with trainable
  per-element ``a1 = a + b``, ``a2 = -a*b``, ``b1 = a - b`` (``a = exp(-1/tau_m)``,
  ``b = exp(-1/tau_s)``). Impulse response at init ``h[n] = a^(n+1) - b^(n+1)`` (no delay, no
  peak normalisation); DC gain ``a/(1-a) - b/(1-b)`` (2.93883 for (4, 1)).
* ``FirstOrderLowPass(tau)``: ``y[t] = alpha*y[t-1] + x[t]``, trainable per-element
  ``alpha = exp(-1/tau)``; impulse response ``alpha^n``, DC gain ``1/(1-alpha)``.
* ``DualExpReadoutFilter(tau_m, tau_s, normalize=True)``: the fixed two-state filter
  ``m = a*m + x``, ``s = b*s + x``, ``out = V0*(m - s)``, ``V0 = eta^(eta/(eta-1))/(eta-1)``,
  ``eta = tau_m/tau_s`` (1 without ``normalize``). Impulse response ``V0*(a^n - b^n)``: 0 at lag
  0, peak 0.9973 at lag 4 for (8, 2). Nothing trainable (associative-memory loss).

Stability (``max_radius=r``, ``0 < r < 1``): after every optimizer step the trainable
coefficients are projected so that every pole lies within radius ``r`` (dual exp: ``|alpha_2| <=
r^2``, ``|alpha_1| <= r - alpha_2/r``, the stability triangle scaled by ``r``; low-pass:
``|alpha| <= r``). Inside that region the projection is the identity, so training is unchanged
until a filter reaches it. ``None`` trains freely, as the original (which can leave the stable
region and make the output grow without bound).

Held input (``held_steps=T``): the input is one frame ``[B, ...]`` held for ``T`` steps (the copy
encoding folded into the filter) and the output is ``[B, T, ...]``. The filters are linear and
time-invariant with per-element coefficients, so that output is ``x`` times the filter's step
response plus, from a nonzero initial state, each state component times its zero-input response;
all of these are computed by the filter itself at batch size 1, and no recurrence runs over the
batch. Equal to the filter of the repeated frame up to float rounding (the products are
associated differently). snn_mlp_1's first synapse, 784 wide at B 64, T 25: forward + backward
8.1 -> 4.2 ms (side by side, beside other jobs).

State modes (``state=``): ``"zero"`` starts every call from zero states; ``"carry"`` (needs a
fixed ``batch_size``) keeps the final states of each call in non-trainable weights ``[B, ...]``
(detached: truncated BPTT across calls) and starts the next call from them; ``reset_states()``
zeroes them. Independently of the mode, ``call(x, initial_state=..., return_state=True)`` takes
and returns the state explicitly (a list of ``[B, ...]`` tensors).
"""
import math

import keras
import tensorflow as tf

from tfsnn.timeaxis import scan_time
STATES = ("zero", "carry")


def dual_exp_coefficients(tau_m, tau_s):
    """``(alpha_1, alpha_2, beta_1)`` of the dual-exponential IIR synapse for ``(tau_m, tau_s)``."""
    a, b = math.exp(-1.0 / tau_m), math.exp(-1.0 / tau_s)
    return a + b, -a * b, a - b


def dual_exp_peak_gain(tau_m, tau_s):
    """``V0 = eta^(eta/(eta-1)) / (eta-1)``, ``eta = tau_m/tau_s`` (2.116535 for (4,1), (8,2))."""
    eta = tau_m / tau_s
    return eta ** (eta / (eta - 1.0)) / (eta - 1.0)


def iir2(x, alpha_1, alpha_2, beta_1, initial_state=None):
    """Second-order IIR over axis 1: ``y[t] = a1*y[t-1] + a2*y[t-2] + b1*x[t]``.

    ``x`` ``[B, T, ...]``; coefficients broadcast against ``[B, ...]``; ``initial_state`` =
    ``(y[-1], y[-2])`` ``[B, ...]`` each (zeros if None). Returns ``(y [B, T, ...], [y[T-1],
    y[T-2]])``.
    """
    xb = x * beta_1
    if initial_state is None:
        z = tf.zeros_like(xb[:, 0])
        initial_state = (z, z)
    y1, y2 = (tf.cast(s, xb.dtype) for s in initial_state)

    def step(carry, xin):
        p1, p2 = carry
        y = alpha_1 * p1 + alpha_2 * p2 + xin
        return (y, p1), y

    ys, final = scan_time(step, xb, (y1, y2))
    return ys, list(final)


def iir1(x, alpha, initial_state=None):
    """First-order IIR over axis 1: ``y[t] = alpha*y[t-1] + x[t]``; state ``[y[T-1]]``."""
    y0 = (tf.zeros_like(x[:, 0]) if initial_state is None
          else tf.cast(initial_state[0], x.dtype))

    def step(p, xin):
        y = alpha * p + xin
        return y, y

    ys, last = scan_time(step, x, y0)
    return ys, [last]


def dual_exp_readout(x, tau_m=8.0, tau_s=2.0, normalize=True, initial_state=None):
    """The fixed filter ``V0*(m - s)``, ``m = a*m + x``, ``s = b*s + x``; state ``[m, s]``."""
    a, b = math.exp(-1.0 / tau_m), math.exp(-1.0 / tau_s)
    v0 = dual_exp_peak_gain(tau_m, tau_s) if normalize else 1.0
    if initial_state is None:
        z = tf.zeros_like(x[:, 0])
        initial_state = (z, z)
    m0, s0 = (tf.cast(s, x.dtype) for s in initial_state)

    def step(carry, xin):
        m, s = a * carry[0] + xin, b * carry[1] + xin
        return (m, s), m - s

    diff, final = scan_time(step, x, (m0, s0))
    return v0 * diff, list(final)


def check_radius(max_radius, initial_pole):
    """``None`` or a float in ``[initial_pole, 1)`` (``ValueError`` otherwise)."""
    if max_radius is None:
        return None
    if not 0.0 < float(max_radius) < 1.0:
        raise ValueError(f"max_radius must be in (0, 1) or None, got {max_radius!r}")
    if initial_pole > max_radius:
        raise ValueError(f"max_radius={max_radius} is below the initial pole {initial_pole:.4f}")
    return float(max_radius)


def project_dual_exp(alpha_1, alpha_2, r):
    """``(alpha_1, alpha_2)`` moved into the region where both roots of ``z^2 - alpha_1 z -
    alpha_2`` have modulus <= ``r``: clip ``alpha_2`` to ``[-r^2, r^2]``, then ``alpha_1`` to
    ``+-(r - alpha_2/r)``. Identity inside the region; elementwise."""
    a2 = tf.clip_by_value(alpha_2, -r * r, r * r)
    bound = r - a2 / r
    return tf.clip_by_value(alpha_1, -bound, bound), a2


class _ClipRadius(keras.constraints.Constraint):
    """Pole-radius constraint of one coefficient (``role``): ``"alpha"`` (low-pass, ``|alpha| <=
    r``), ``"alpha_2"`` or ``"alpha_1"`` (reads ``layer.alpha_2``, so the pair lands in the region
    whichever variable the optimizer constrains first). Not serialized: the layer's
    ``max_radius`` config recreates it."""

    def __init__(self, r, role, layer=None):
        self.r, self.role, self.layer = r, role, layer

    def __call__(self, w):
        if self.role == "alpha":
            return tf.clip_by_value(w, -self.r, self.r)
        if self.role == "alpha_2":
            return project_dual_exp(tf.zeros_like(w), w, self.r)[1]
        return project_dual_exp(w, tf.convert_to_tensor(self.layer.alpha_2), self.r)[0]


def held_response(filt, x, timesteps, initial_state=None):
    """The output ``[B, T, ...]`` and final state of the linear filter ``filt(seq, initial_state)
    -> (y, final)`` driven by the frame ``x`` ``[B, ...]`` held for ``timesteps`` steps, from
    ``initial_state`` (zeros if None), by superposition of batch-1 responses (module docstring)."""
    ones = tf.ones(tf.concat([[1, timesteps], tf.shape(x)[1:]], 0), x.dtype)
    step, final_step = filt(ones, None)
    y = x[:, None] * step
    final = [x * f for f in final_step]
    if initial_state is not None:
        initial_state = [tf.cast(s, x.dtype) for s in initial_state]
        unit, zero = tf.ones_like(ones[:, 0]), tf.zeros_like(ones[:, 0])
        for i, s in enumerate(initial_state):
            basis = [unit if j == i else zero for j in range(len(initial_state))]
            resp, final_resp = filt(tf.zeros_like(ones), basis)
            y = y + s[:, None] * resp
            final = [f + s * r for f, r in zip(final, final_resp)]
    return y, final


class StatefulSequenceLayer(keras.layers.Layer):
    """Base of the layers with a recurrence over time: the ``zero`` / ``carry`` state policy.

    Subclasses define ``state_shapes(input_shape) -> list of per-sample shapes`` and
    ``run(x, initial_state) -> (y, final_state)``.
    """

    def __init__(self, state="zero", batch_size=None, **kwargs):
        super().__init__(**kwargs)
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        if state == "carry" and (batch_size is None or int(batch_size) < 1):
            raise ValueError("state='carry' needs a fixed batch_size >= 1 (use drop_remainder)")
        self.state = state
        self.batch_size = None if batch_size is None else int(batch_size)
        self.carry = []

    def state_shapes(self, input_shape):
        raise NotImplementedError

    def run(self, x, initial_state):
        raise NotImplementedError

    def build_state(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self.name}: input must be [batch, time, ...], got {input_shape}")
        if self.state == "carry":
            self.carry = [self.add_weight(name=f"state_{i}", shape=(self.batch_size, *s),
                                          initializer="zeros", trainable=False)
                          for i, s in enumerate(self.state_shapes(input_shape))]

    def reset_states(self):
        """Zero the carried states (``state="carry"``; no-op otherwise)."""
        for v in self.carry:
            v.assign(tf.zeros(v.shape, v.dtype))

    def call(self, x, initial_state=None, return_state=False):
        x = tf.convert_to_tensor(x)
        if initial_state is None and self.carry:
            initial_state = [tf.stop_gradient(tf.convert_to_tensor(v)) for v in self.carry]
        y, final = self.run(x, initial_state)
        for v, s in zip(self.carry, final):
            v.assign(tf.stop_gradient(s))
        return (y, final) if return_state else y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "state": self.state, "batch_size": self.batch_size}


class LinearFilter(StatefulSequenceLayer):
    """Base of the linear, time-invariant, per-element filters: ``filter(x [B, T, ...],
    initial_state) -> (y, final_state)``, with the ``held_steps`` option (module docstring): the
    input is then a frame ``[B, ...]``, and coefficients and states have its per-example shape."""

    def __init__(self, state="zero", batch_size=None, held_steps=None, **kwargs):
        super().__init__(state, batch_size, **kwargs)
        if held_steps is not None and int(held_steps) < 1:
            raise ValueError(f"held_steps must be None or >= 1, got {held_steps!r}")
        self.held_steps = None if held_steps is None else int(held_steps)

    def element_shape(self, input_shape):
        """The per-element shape of the coefficients and of each state."""
        return tuple(input_shape[1:] if self.held_steps else input_shape[2:])

    def filter(self, x, initial_state):
        raise NotImplementedError

    def run(self, x, initial_state):
        if self.held_steps:
            return held_response(self.filter, x, self.held_steps, initial_state)
        return self.filter(x, initial_state)

    def compute_output_shape(self, input_shape):
        if self.held_steps:
            return (input_shape[0], self.held_steps, *input_shape[1:])
        return input_shape

    def get_config(self):
        return {**super().get_config(), "held_steps": self.held_steps}


@keras.saving.register_keras_serializable(package="tfsnn")
class DualExpIIR(LinearFilter):
    """Dual-exponential IIR synapse ``[B, T, ...] -> [B, T, ...]`` with per-element coefficients
    ``alpha_1, alpha_2, beta_1`` (the per-element shape), initialised from ``(tau_m, tau_s)``
    and trained (``train_coefficients=False`` freezes them), within pole radius ``max_radius`` if
    given (module docstring). State: ``[y[t-1], y[t-2]]``.
    """

    def __init__(self, tau_m=4.0, tau_s=1.0, train_coefficients=True, state="zero",
                 batch_size=None, max_radius=None, held_steps=None, **kwargs):
        super().__init__(state, batch_size, held_steps, **kwargs)
        if not (tau_m > 0 and tau_s > 0 and tau_m != tau_s):
            raise ValueError(f"need tau_m, tau_s > 0 and tau_m != tau_s, got {tau_m!r}, {tau_s!r}")
        self.tau_m, self.tau_s = float(tau_m), float(tau_s)
        self.train_coefficients = bool(train_coefficients)
        self.max_radius = check_radius(max_radius, math.exp(-1.0 / max(tau_m, tau_s)))

    def state_shapes(self, input_shape):
        return [self.element_shape(input_shape)] * 2

    def build(self, input_shape):
        shape = self.element_shape(input_shape)
        a1, a2, b1 = dual_exp_coefficients(self.tau_m, self.tau_s)
        self.alpha_1, self.alpha_2, self.beta_1 = (
            self.add_weight(name=n, shape=shape, initializer=keras.initializers.Constant(v),
                            trainable=self.train_coefficients)
            for n, v in (("alpha_1", a1), ("alpha_2", a2), ("beta_1", b1)))
        if self.max_radius is not None:
            self.alpha_1.constraint = _ClipRadius(self.max_radius, "alpha_1", self)
            self.alpha_2.constraint = _ClipRadius(self.max_radius, "alpha_2")
        self.build_state(input_shape)

    def filter(self, x, initial_state):
        c = [tf.cast(w, x.dtype) for w in (self.alpha_1, self.alpha_2, self.beta_1)]
        return iir2(x, *c, initial_state=initial_state)

    def stability(self):
        """Fraction of elements whose coefficients give a stable filter
        (``|alpha_2| < 1`` and ``|alpha_1| < 1 - alpha_2``)."""
        ok = (tf.abs(self.alpha_2) < 1.0) & (tf.abs(self.alpha_1) < 1.0 - self.alpha_2)
        return tf.reduce_mean(tf.cast(ok, tf.float32))

    def get_config(self):
        return {**super().get_config(), "tau_m": self.tau_m, "tau_s": self.tau_s,
                "train_coefficients": self.train_coefficients, "max_radius": self.max_radius}


@keras.saving.register_keras_serializable(package="tfsnn")
class FirstOrderLowPass(LinearFilter):
    """First-order low-pass synapse ``y[t] = alpha*y[t-1] + x[t]``, ``[B, T, ...]`` in and out;
    trainable per-element ``alpha`` initialised to ``exp(-1/tau)``. State: ``[y[t-1]]``."""

    def __init__(self, tau=4.0, train_coefficients=True, state="zero", batch_size=None,
                 max_radius=None, held_steps=None, **kwargs):
        super().__init__(state, batch_size, held_steps, **kwargs)
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        self.tau = float(tau)
        self.train_coefficients = bool(train_coefficients)
        self.max_radius = check_radius(max_radius, math.exp(-1.0 / tau))

    def state_shapes(self, input_shape):
        return [self.element_shape(input_shape)]

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha", shape=self.element_shape(input_shape), trainable=self.train_coefficients,
            initializer=keras.initializers.Constant(math.exp(-1.0 / self.tau)),
            constraint=None if self.max_radius is None else _ClipRadius(self.max_radius, "alpha"))
        self.build_state(input_shape)

    def filter(self, x, initial_state):
        return iir1(x, tf.cast(self.alpha, x.dtype), initial_state)

    def stability(self):
        """Fraction of elements with ``|alpha| < 1`` (a stable filter)."""
        return tf.reduce_mean(tf.cast(tf.abs(self.alpha) < 1.0, tf.float32))

    def get_config(self):
        return {**super().get_config(), "tau": self.tau,
                "train_coefficients": self.train_coefficients, "max_radius": self.max_radius}


@keras.saving.register_keras_serializable(package="tfsnn")
class DualExpReadoutFilter(LinearFilter):
    """The fixed (normalised) dual-exponential filter ``V0*(m - s)`` of §A.2.3, ``[B, T, ...]``
    in and out, no weights. State: ``[m, s]``."""

    def __init__(self, tau_m=8.0, tau_s=2.0, normalize=True, state="zero", batch_size=None,
                 held_steps=None, **kwargs):
        super().__init__(state, batch_size, held_steps, **kwargs)
        if not (tau_m > 0 and tau_s > 0 and tau_m != tau_s):
            raise ValueError(f"need tau_m, tau_s > 0 and tau_m != tau_s, got {tau_m!r}, {tau_s!r}")
        self.tau_m, self.tau_s = float(tau_m), float(tau_s)
        self.normalize = bool(normalize)

    def state_shapes(self, input_shape):
        return [self.element_shape(input_shape)] * 2

    def build(self, input_shape):
        self.build_state(input_shape)

    def filter(self, x, initial_state):
        return dual_exp_readout(x, self.tau_m, self.tau_s, self.normalize, initial_state)

    def get_config(self):
        return {**super().get_config(), "tau_m": self.tau_m, "tau_s": self.tau_s,
                "normalize": self.normalize}

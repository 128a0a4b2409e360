"""Spiking neuron layers trained with surrogate gradients (docs/specs/hybrid_and_spike_bp.md §2-§4).

Tensors are ``[batch, time, ...]``. A neuron layer maps an input-current sequence ``I`` to a
spike sequence ``o`` (same shape, values 0/1 in ``I``'s dtype). The whole recursion over time is
**one** ``tf.custom_gradient`` op (``spike_sequence``) whose forward is a ``tf.while_loop`` and
whose backward is the hand-written recursion of docs/specs/hybrid_and_spike_bp.md §2.7 / §3.5, so the tape stores only the
output spikes plus one auxiliary ``[T, batch, ...]`` tensor (the pre-spike membrane for
membrane-based surrogates, the spike age for STDB, nothing for Lee's spike-gated surrogate).

Neuron (threshold ``theta``, leak ``lam``; ``V(-1) = 0``; ``H`` strict), two orderings:

* ``fire_before_integrate=False`` (standard, Lee)::

      U(t) = lam * R(t-1) + I(t);   o(t) = H(U(t)/theta - 1)
      R(t) = U(t) - theta*o(t)   (reset="subtract")   or   U(t) * (1 - o(t))   (reset="zero")

* ``fire_before_integrate=True`` (Rathi's one-step delay; the spike reads the previous membrane)::

      U(t) = V(t-1);              o(t) = H(U(t)/theta - 1)
      V(t) = lam*U(t) - theta*o(t) + I(t)   or   lam*U(t)*(1 - o(t)) + I(t)

Backward (the reset never carries gradient, as in both originals): with ``g(t) = dL/do(t)``,
``sigma(t) = do/dz`` from the surrogate, ``NG`` Lee's leak correction (1 when off) and
``k(t) = lam_g * (1 or 1 - o(t))`` (``lam_g = lam`` if ``leak_in_grad`` else 1)::

      c(T) = 0;   c(t) = g(t) * NG * sigma(t) / theta + k(t) * c(t+1)
      dL/dI(t) = c(t)          (standard)      dL/dI(t) = c(t+1), dL/dI(T-1) = 0   (delayed)

Lee's ``NG = 1[LF > 1e-3] + ln(lam) * LF / N`` with ``LF = sum_t lam^(T-1-t) o(t)`` and spike count
``N`` (set to 1 where < 1e-3) is computed per neuron and sample in the forward pass.
"""
import math

import keras
import tensorflow as tf

from tfsnn import surrogates as sg

RESETS = ("subtract", "zero")
# jit_compile=None: XLA-compile the loops when tracing a graph with at least this many steps
# (JIT_AUTO; jit_compile=False opts out, True opts in at any T).
JIT_MIN_STEPS = 64
JIT_AUTO = True


def _check_neuron_args(threshold, leak, reset):
    if isinstance(threshold, (int, float)) and not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    if not 0.0 < float(leak) <= 1.0:
        raise ValueError(f"leak must be in (0, 1], got {leak!r}")
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")


def _reverse_recursion(e, k):
    """``c(t) = e(t) + k(t) * c(t+1)``, ``c(T) = 0``, over axis 0. ``k``: tensor or float."""
    if isinstance(k, float) and k == 1.0:
        return tf.cumsum(e, axis=0, reverse=True)
    n = tf.shape(e)[0]
    e_ta = tf.TensorArray(e.dtype, size=n).unstack(e)
    k_ta = None if isinstance(k, float) else tf.TensorArray(e.dtype, size=n).unstack(k)
    out = tf.TensorArray(e.dtype, size=n)

    def body(i, c, out):
        t = n - 1 - i
        kt = k if k_ta is None else k_ta.read(t)
        c = e_ta.read(t) + kt * c
        return i + 1, c, out.write(t, c)

    _, _, out = tf.while_loop(lambda i, c, o: i < n, body,
                              (tf.constant(0), tf.zeros_like(e[0]), out))
    return out.stack()


def _lee_ng_time_major(o_tm, leak):
    n = tf.shape(o_tm)[0]
    dtype = o_tm.dtype
    w = tf.pow(tf.constant(float(leak), dtype), tf.cast(n - 1 - tf.range(n), dtype))
    lf = tf.tensordot(w, o_tm, axes=[[0], [0]])
    cnt = tf.reduce_sum(o_tm, axis=0)
    cnt = tf.where(cnt < 1e-3, tf.ones_like(cnt), cnt)
    return tf.cast(lf > 1e-3, dtype) + math.log(leak) * lf / cnt


def lee_ng(spikes, leak):
    """Lee's leak correction ``NG = 1[LF > 1e-3] + ln(leak) * LF / N``: ``[B, T, ...] -> [B, ...]``.

    ``LF = sum_t leak^(T-1-t) o(t)`` (leaky spike trace at the last step), ``N`` = spike count
    (1 where < 1e-3). 0 for silent neurons; in ``[1 + ln leak, 1 + ln(leak) leak^(T-1)]`` else.
    """
    o = tf.convert_to_tensor(spikes)
    perm = [1, 0] + list(range(2, o.shape.rank))
    return _lee_ng_time_major(tf.transpose(o, perm), float(leak))


def spike_sequence(current, threshold=1.0, leak=1.0, reset="subtract", surrogate="linear",
                   fire_before_integrate=False, leak_in_grad=True, ng_correction=False,
                   t_last0=-999.0, return_membrane=False, jit_compile=None):
    """Spikes ``[B, T, ...]`` of an IF/LIF population driven by ``current`` ``[B, T, ...]``.

    One custom-gradient op (see the module docstring for the equations). ``threshold``: float or
    scalar tensor (> 0, no gradient); ``leak`` in (0, 1] (1 = IF); ``surrogate``: name, instance
    or config of ``tfsnn.surrogates``; ``t_last0``: the spike time assumed before t = 0 (STDB's
    -999 sentinel). ``return_membrane``: also return the final state ``R(T-1)`` / ``V(T-1)``
    ``[B, ...]`` (no gradient through it). ``jit_compile``: run the forward loop and the backward
    recursion as XLA-compiled functions (None: when tracing a graph whose static T is at least
    ``JIT_MIN_STEPS``; never eagerly).
    """
    _check_neuron_args(threshold, leak, reset)
    sur = sg.get(surrogate)
    x = tf.convert_to_tensor(current)
    if not x.dtype.is_floating:
        raise TypeError(f"current must be a float tensor, got {x.dtype}")
    if x.shape.rank is not None and x.shape.rank < 2:
        raise ValueError(f"current must be [batch, time, ...], got shape {x.shape}")
    dtype = x.dtype
    lam = float(leak)
    lam_g = lam if leak_in_grad else 1.0
    delayed = bool(fire_before_integrate)
    zero_reset = reset == "zero"
    aux_kind = "dt" if sur.uses_dt else ("none" if isinstance(sur, sg.LeeSpike) else "u")
    theta = (tf.constant(float(threshold), dtype) if isinstance(threshold, (int, float))
             else tf.cast(threshold, dtype))  # cast of a Python float would round via float32
    theta = tf.stop_gradient(theta)
    rank = x.shape.rank
    perm = [1, 0] + list(range(2, rank))

    def forward(x_btn, theta):
        i_tm = tf.transpose(x_btn, perm)  # [T, B, ...]
        n = tf.shape(i_tm)[0]
        i_ta = tf.TensorArray(dtype, size=n).unstack(i_tm)
        # aux "u": the spikes are recomputed from the saved membrane (one write per step)
        o_ta = tf.TensorArray(dtype, size=n) if aux_kind != "u" else 0
        a_ta = tf.TensorArray(dtype, size=n) if aux_kind != "none" else None
        zeros = tf.zeros_like(i_tm[0])
        t_last = zeros + tf.cast(t_last0, dtype)

        def body(t, v, t_last, o_ta, a_ta):
            it = i_ta.read(t)
            u = v if delayed else (v if lam == 1.0 else lam * v) + it
            fired = u > theta
            o = tf.cast(fired, dtype)
            if aux_kind == "u":
                a_ta = a_ta.write(t, u)
            elif aux_kind == "dt":
                tf_ = tf.cast(t, dtype)
                a_ta = a_ta.write(t, tf_ - t_last)
                t_last = tf.where(fired, tf_, t_last)
            if delayed:
                lu = u if lam == 1.0 else lam * u
                v = (tf.where(fired, zeros, lu) if zero_reset else lu - theta * o) + it
            else:
                v = tf.where(fired, zeros, u) if zero_reset else u - theta * o
            return t + 1, v, t_last, o_ta.write(t, o) if aux_kind != "u" else o_ta, a_ta

        loop_vars = (tf.constant(0), zeros, t_last, o_ta, a_ta if a_ta is not None else 0)
        _, v_end, _, o_ta, a_ta = tf.while_loop(
            lambda t, *_: t < n, body, loop_vars, maximum_iterations=n)
        aux = a_ta.stack() if aux_kind != "none" else tf.zeros([0], dtype)
        o_tm = tf.cast(aux > theta, dtype) if aux_kind == "u" else o_ta.stack()
        ng = _lee_ng_time_major(o_tm, lam) if ng_correction else tf.zeros([0], dtype)
        return tf.transpose(o_tm, perm), o_tm, aux, ng, v_end

    def backward(d_spikes, o_tm, aux, ng, theta):
        g = tf.transpose(d_spikes, perm)
        if ng_correction:
            g = g * ng
        if aux_kind == "u":
            sig = sur.grad(aux / theta - 1.0, o_tm)
        elif aux_kind == "dt":
            sig = sur.grad(tf.zeros_like(aux), o_tm, aux)
        else:
            sig = sur.grad(o_tm - 0.5, o_tm)  # spike-gated: only the spike is used
        e = g * sig / theta
        k = (lam_g * (1.0 - o_tm)) if zero_reset else lam_g
        c = _reverse_recursion(e, k)
        if delayed:
            c = tf.concat([c[1:], tf.zeros_like(c[:1])], axis=0)
        return tf.transpose(c, perm)

    if jit_compile is None:
        steps = x.shape[1]
        jit_compile = (JIT_AUTO and not tf.executing_eagerly() and steps is not None
                       and steps >= JIT_MIN_STEPS)
    if jit_compile:
        forward = tf.function(forward, jit_compile=True)
        backward = tf.function(backward, jit_compile=True)

    @tf.custom_gradient
    def op(x_btn):
        # stop_gradient: the tape must not differentiate the (XLA) function itself; it would
        # try to export the loop's TensorLists. The gradient is ``grad`` below.
        spikes, o_tm, aux, ng, v_end = forward(tf.stop_gradient(x_btn), theta)

        def grad(d_spikes, *unused):
            return backward(tf.stop_gradient(d_spikes), o_tm, aux, ng, theta)

        if return_membrane:
            return (spikes, tf.stop_gradient(v_end)), grad
        return spikes, grad

    return op(x)


# --------------------------------------------------------------------------- Keras layers

@keras.saving.register_keras_serializable(package="tfsnn")
class LIF(keras.layers.Layer):
    """Leaky integrate-and-fire population: input currents ``[B, T, ...]`` -> spikes ``[B, T, ...]``.

    ``threshold`` is the initial value of the non-trainable scalar weight ``theta`` (saved with
    the model; threshold balancing writes it). ``leak`` in (0, 1] is the per-step membrane
    factor (1 = IF). ``reset``: ``"subtract"`` (soft) or ``"zero"`` (hard). ``surrogate``: a
    ``tfsnn.surrogates`` name, instance or config. Switches reproducing the originals:
    ``fire_before_integrate`` (Rathi's one-step delay), ``leak_in_grad`` (False: Lee's identity
    leak in the backward pass), ``ng_correction`` (Lee's leak-aware gain), ``t_last0`` (STDB's
    spike-time sentinel). ``jit_compile``: XLA for the op's loops (None: automatic, see
    ``spike_sequence``). Gradient: one custom op, see ``spike_sequence``.
    """

    def __init__(self, threshold=1.0, leak=1.0, reset="subtract", surrogate="linear",
                 fire_before_integrate=False, leak_in_grad=True, ng_correction=False,
                 t_last0=-999.0, jit_compile=None, **kwargs):
        super().__init__(**kwargs)
        _check_neuron_args(float(threshold), leak, reset)
        self.jit_compile = jit_compile
        self.threshold_init = float(threshold)
        self.leak = float(leak)
        self.reset = reset
        self.surrogate = sg.get(surrogate)
        self.fire_before_integrate = bool(fire_before_integrate)
        self.leak_in_grad = bool(leak_in_grad)
        self.ng_correction = bool(ng_correction)
        self.t_last0 = float(t_last0)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self.name}: input must be [batch, time, ...], got {input_shape}")
        self.theta = self.add_weight(
            name="threshold", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self.threshold_init))

    def call(self, current, return_membrane=False):
        return spike_sequence(
            current, self.theta, self.leak, self.reset, self.surrogate,
            self.fire_before_integrate, self.leak_in_grad, self.ng_correction, self.t_last0,
            return_membrane=return_membrane, jit_compile=self.jit_compile)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold_init, "leak": self.leak,
                "reset": self.reset, "surrogate": sg.serialize(self.surrogate),
                "fire_before_integrate": self.fire_before_integrate,
                "leak_in_grad": self.leak_in_grad, "ng_correction": self.ng_correction,
                "t_last0": self.t_last0, "jit_compile": self.jit_compile}


@keras.saving.register_keras_serializable(package="tfsnn")
class IF(LIF):
    """Integrate-and-fire (``LIF`` with ``leak = 1``)."""

    def __init__(self, threshold=1.0, leak=1.0, **kwargs):
        if float(leak) != 1.0:
            raise ValueError(f"IF has no leak (leak=1), got leak={leak!r}; use LIF")
        super().__init__(threshold=threshold, leak=1.0, **kwargs)


@keras.saving.register_keras_serializable(package="tfsnn")
class RathiNeuron(LIF):
    """Rathi et al. (hybrid + STDB) neuron: fire from ``V(t-1)``, soft reset, STDB surrogate.

    Defaults: ``leak=1`` (IF), ``surrogate=STDB(alpha=0.3, beta=0.01)``, ``t_last0=-999``.
    """

    def __init__(self, threshold=1.0, leak=1.0, reset="subtract", surrogate="stdb",
                 fire_before_integrate=True, leak_in_grad=True, ng_correction=False,
                 t_last0=-999.0, jit_compile=None, **kwargs):
        super().__init__(threshold, leak, reset, surrogate, fire_before_integrate,
                         leak_in_grad, ng_correction, t_last0, jit_compile, **kwargs)


@keras.saving.register_keras_serializable(package="tfsnn")
class LeeNeuron(LIF):
    """Lee et al. (spike-based BP) neuron: integrate first, reset to zero, ``leak=0.99``,
    spike-gated surrogate ``1[U > theta]/theta``, identity leak in the gradient, NG correction."""

    def __init__(self, threshold=1.0, leak=0.99, reset="zero", surrogate="lee",
                 fire_before_integrate=False, leak_in_grad=False, ng_correction=True,
                 t_last0=-999.0, jit_compile=None, **kwargs):
        super().__init__(threshold, leak, reset, surrogate, fire_before_integrate,
                         leak_in_grad, ng_correction, t_last0, jit_compile, **kwargs)


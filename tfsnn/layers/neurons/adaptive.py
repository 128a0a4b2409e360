"""Adaptive-threshold LIF (ALIF, Bellec et al.'s LSNN neuron) as one fused op.

State ``(S, a)`` (membrane after reset, adaptation); per step, with threshold ``theta``, leak
``lam``, adaptation decay ``rho`` and scale ``beta``::

    U(t) = lam*S(t-1) + I(t);   A(t) = theta + beta*a(t-1);   o(t) = H(U/A - 1)
    S(t) = U - A*o  (reset="subtract")  or  U*(1 - o)  ("zero");   a(t) = rho*a(t-1) + o(t)

Gradient (hand-written, reverse ``tf.while_loop``): the reset's ``o`` is detached by default,
``A`` is not; the adaptation carries the surrogate gradient of ``o``: with ``q = sigma/A``,
``gS = gS_ext + lam gU(t+1)``, ``g = dL/do + ga(t) + gS r``::

    gU(t) = gS d + g q;   gA(t) = -g sigma U / A^2 - gS o [subtract];   ga(t-1) = rho ga(t) + beta gA(t)

(``d`` = 1 or ``1 - o``; ``r = dS/do``: 0 when detached, ``-A`` / ``-U`` for subtract / zero).
Parameters: ``dL/dtheta = sum gA``, ``dL/dbeta = sum gA a(t-1)``, ``dL/drho = sum ga(t) a(t-1)``,
``dL/dlam = sum gU S(t-1)`` (summed to their shapes, e.g. per channel). The tape keeps ``U``
and ``a(t-1)`` (``[T, B, ...]`` each).
"""
import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import fused
from tfsnn.layers.neurons.lif import _sum_to
from tfsnn.timeaxis import TIME_MAJOR, batch_time_perm


def alif_sequence(current, *, threshold=1.0, leak=1.0, adapt_decay=0.95, adapt_scale=1.0,
                  reset="subtract", surrogate="linear", initial_state=None, return_trace=False,
                  detach_reset=True, param_gradients=False, jit_compile=None):
    """ALIF spikes of ``current`` ``[B, T, ...]``: ``(spikes, trace or None, (S, a))``.

    ``initial_state``: ``(S, a)`` ``[B, ...]`` each (default zeros); gradients flow into it and
    out of the trace (``S(t)``, ``[B, T, ...]``) and the final state. ``threshold``, ``leak``,
    ``adapt_decay``, ``adapt_scale``: floats or tensors (scalar or per channel); with
    ``param_gradients`` they receive gradients. ``detach_reset=False``: the reset's ``o``
    carries the surrogate gradient too. The tape keeps ``U`` and ``a(t-1)``.
    """
    sur = fused.check_surrogate(sg.get(surrogate))
    fused.reset_of(reset)
    x = tf.convert_to_tensor(current)
    dtype = x.dtype
    perm = batch_time_perm(x.shape.rank)
    theta, lam, rho, beta = (fused.dynamics(v, dtype, param_gradients)
                             for v in (threshold, leak, adapt_decay, adapt_scale))
    zeros = tf.zeros_like(x[:, 0])
    s0, a0 = (zeros, zeros) if initial_state is None else (
        tuple(tf.cast(s, dtype) + zeros for s in initial_state))

    def forward(x_btn, s0, a0, theta, lam, rho, beta):
        def step(t, xs, carry):
            s, a = carry
            u = lam * s + xs[0]
            a_thr = theta + beta * a
            fired = u > a_thr
            o = tf.cast(fired, dtype)
            return (fused.apply_reset(reset, u, a_thr, o, fired), rho * a + o), (u, a)

        (s_end, a_end), (u_tm, ap_tm) = fused.time_loop(
            step, [tf.transpose(x_btn, perm)], (s0, a0), 2)
        a_tm = theta + beta * ap_tm
        o_tm = tf.cast(u_tm > a_tm, dtype)
        trace = (tf.transpose(fused.apply_reset(reset, u_tm, a_tm, o_tm, o_tm > 0), perm)
                 if return_trace else tf.zeros([0], dtype))
        return (tf.transpose(o_tm, perm), trace, s_end, a_end), (u_tm, ap_tm)

    def backward(dys, saved, inputs):
        d_spk, d_trace, d_s_end, d_a_end = dys
        u_tm, ap_tm = saved
        _, s0, a0, theta, lam, rho, beta = inputs
        g_o = tf.transpose(d_spk, perm)
        g_s = tf.transpose(d_trace, perm) if return_trace else tf.zeros_like(g_o)
        g_s = tf.concat([g_s[:-1], g_s[-1:] + d_s_end[None]], axis=0)

        def step(t, xs, carry):  # threshold, spikes, surrogate, reset terms: per step (fused)
            g_o_t, g_s_t, u, ap = xs
            a_thr = theta + beta * ap
            o = tf.cast(u > a_thr, dtype)
            sig = fused.surrogate_sigma(sur, u / a_thr - 1.0, o)
            d_t, r_t = fused.reset_terms(reset, detach_reset, o, u, a_thr)
            g_u1, g_a = carry
            g_state = g_s_t + lam * g_u1
            g = g_o_t + g_a + (g_state * r_t if not isinstance(r_t, float) else 0.0)
            g_u = (g_state * d_t if not isinstance(d_t, float) else g_state) + g * sig / a_thr
            g_thr = -g * sig * u / tf.square(a_thr)
            if reset == "subtract":
                g_thr = g_thr - g_state * o
            return (g_u, rho * g_a + beta * g_thr), (g_u, g_thr, g_a)[:n_out]

        n_out = 3 if param_gradients else 1
        (g_u0, g_a0), outs = fused.reverse_loop(
            step, [g_o, g_s, u_tm, ap_tm],
            (tf.zeros_like(g_o[0]), tf.broadcast_to(d_a_end, tf.shape(g_o[0]))), n_out)
        grads = (tf.transpose(outs[0], perm), lam * g_u0, g_a0)
        if not param_gradients:
            return grads + tuple(tf.zeros_like(v) for v in (theta, lam, rho, beta))
        g_u, g_thr, g_a = outs
        a_tm = theta + beta * ap_tm
        o_tm = tf.cast(u_tm > a_tm, dtype)
        s_prev = TIME_MAJOR.shift_down(s0, fused.apply_reset(reset, u_tm, a_tm, o_tm, o_tm > 0))
        return grads + (_sum_to(g_thr, theta), _sum_to(g_u * s_prev, lam),
                        _sum_to(g_a * ap_tm, rho), _sum_to(g_thr * ap_tm, beta))

    spikes, trace, s_end, a_end = fused.fused_op(
        forward, backward, (x, s0, a0, theta, lam, rho, beta), x.shape[1], jit_compile)
    return spikes, (trace if return_trace else None), (s_end, a_end)


@keras.saving.register_keras_serializable(package="tfsnn")
class ALIF(fused.FusedNeuronLayer):
    """Adaptive LIF population ``[B, T, ...] -> [B, T, ...]`` (module docstring): the
    ``FusedNeuronLayer`` arguments plus ``adapt_decay`` (``rho`` per step, default 0.95) or
    ``tau_adapt`` (steps; ``rho = exp(-1/tau_adapt)``) and ``adapt_scale`` (``beta``, default
    1.0, threshold units per unit of adaptation). State ``("membrane", "adaptation")``."""

    STATE_NAMES = ("membrane", "adaptation")
    FLOATS = (("adapt_decay", "tau_adapt", 0.95), ("adapt_scale", None, 1.0))

    def _run(self, current, state, return_trace):
        return alif_sequence(current, adapt_scale=self.adapt_scale, initial_state=state,
                             return_trace=return_trace, **self._dynamics())

"""Adaptive-threshold LIF (ALIF, Bellec et al.'s LSNN neuron) as one fused op.

State ``(S, a)`` (membrane after reset, adaptation); per step, with threshold ``theta``, leak
``lam``, adaptation decay ``rho`` and scale ``beta``::

    U(t) = lam*S(t-1) + I(t);   A(t) = theta + beta*a(t-1);   o(t) = H(U/A - 1)
    S(t) = U - A*o  (reset="subtract")  or  U*(1 - o)  ("zero");   a(t) = rho*a(t-1) + o(t)

Gradient (hand-written, reverse ``tf.while_loop``): the reset's ``o`` is detached, ``A`` is
not; the adaptation carries the surrogate gradient of ``o``: with ``q = sigma/A``,
``gS = gS_ext + lam gU(t+1)``, ``g = dL/do + ga(t)``::

    gU(t) = gS d + g q;   gA(t) = -g sigma U / A^2 - gS o [subtract];   ga(t-1) = rho ga(t) + beta gA(t)

(``d`` = 1 or ``1 - o``). The tape keeps ``U`` and ``A`` (``[T, B, ...]`` each).
"""
import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import fused
from tfsnn.timeaxis import batch_time_perm


def alif_sequence(current, *, threshold=1.0, leak=1.0, adapt_decay=0.95, adapt_scale=1.0,
                  reset="subtract", surrogate="linear", initial_state=None, return_trace=False,
                  jit_compile=None):
    """ALIF spikes of ``current`` ``[B, T, ...]``: ``(spikes, trace or None, (S, a))``.

    ``initial_state``: ``(S, a)`` ``[B, ...]`` each (default zeros); gradients flow into it and
    out of the trace (``S(t)``, ``[B, T, ...]``) and the final state. ``threshold``: float or
    scalar tensor (no gradient).
    """
    sur = fused.check_surrogate(sg.get(surrogate))
    fused.reset_of(reset)
    x = tf.convert_to_tensor(current)
    dtype = x.dtype
    perm = batch_time_perm(x.shape.rank)
    theta = tf.stop_gradient(tf.cast(threshold, dtype) if not isinstance(threshold, float)
                             else tf.constant(threshold, dtype))
    lam, rho, beta = (tf.constant(float(v), dtype) for v in (leak, adapt_decay, adapt_scale))
    zeros = tf.zeros_like(x[:, 0])
    s0, a0 = (zeros, zeros) if initial_state is None else (
        tuple(tf.cast(s, dtype) + zeros for s in initial_state))

    def reset_fn(u, a_thr, o, fired):
        return u - a_thr * o if reset == "subtract" else tf.where(fired, tf.zeros_like(u), u)

    def forward(x_btn, s0, a0):
        def step(t, xs, carry):
            s, a = carry
            u = lam * s + xs[0]
            a_thr = theta + beta * a
            fired = u > a_thr
            o = tf.cast(fired, dtype)
            return (reset_fn(u, a_thr, o, fired), rho * a + o), (u, a_thr)

        (s_end, a_end), (u_tm, a_tm) = fused.time_loop(
            step, [tf.transpose(x_btn, perm)], (s0, a0), 2)
        o_tm = tf.cast(u_tm > a_tm, dtype)
        trace = (tf.transpose(reset_fn(u_tm, a_tm, o_tm, o_tm > 0), perm) if return_trace
                 else tf.zeros([0], dtype))
        return (tf.transpose(o_tm, perm), trace, s_end, a_end), (u_tm, a_tm)

    def backward(dys, saved, inputs):
        d_spk, d_trace, d_s_end, d_a_end = dys
        u_tm, a_tm = saved
        o_tm = tf.cast(u_tm > a_tm, dtype)
        sigma = fused.surrogate_sigma(sur, u_tm / a_tm - 1.0, o_tm)
        g_o = tf.transpose(d_spk, perm)
        g_s = tf.transpose(d_trace, perm) if return_trace else tf.zeros_like(g_o)
        g_s = tf.concat([g_s[:-1], g_s[-1:] + d_s_end[None]], axis=0)
        d = 1.0 - o_tm if reset == "zero" else tf.ones_like(o_tm)

        def step(t, xs, carry):
            g_o_t, g_s_t, u, a_thr, o, sig, d_t = xs
            g_u1, g_a = carry
            g_state = g_s_t + lam * g_u1
            g = g_o_t + g_a
            g_u = g_state * d_t + g * sig / a_thr
            g_thr = -g * sig * u / tf.square(a_thr)
            if reset == "subtract":
                g_thr = g_thr - g_state * o
            return (g_u, rho * g_a + beta * g_thr), (g_u,)

        (g_u0, g_a0), (g_u,) = fused.reverse_loop(
            step, [g_o, g_s, u_tm, a_tm, o_tm, sigma, d], (tf.zeros_like(g_o[0]), d_a_end), 1)
        return tf.transpose(g_u, perm), lam * g_u0, g_a0

    spikes, trace, s_end, a_end = fused.fused_op(forward, backward, (x, s0, a0), x.shape[1],
                                                 jit_compile)
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
        return alif_sequence(current, threshold=self.theta, leak=self.leak,
                             adapt_decay=self.adapt_decay, adapt_scale=self.adapt_scale,
                             reset=self.reset, surrogate=self.surrogate, initial_state=state,
                             return_trace=return_trace, jit_compile=self.jit_compile)

"""Current-based LIF (CuBa-LIF: synaptic current + membrane; snnTorch ``Synaptic``, NIR
``CubaLIF``) as one fused op.

State ``(J, S)`` (synaptic current, membrane after reset)::

    J(t) = alpha*J(t-1) + I(t);   U(t) = lam*S(t-1) + J(t);   o(t) = H(U/theta - 1)
    S(t) = U - theta*o | U*(1 - o) | U   (reset "subtract" | "zero" | "none")

Backward (hand-written, two reverse recursions): ``gU(t) = gS_ext m + g q + lam m gU(t+1)``
(``q = sigma/theta``, ``m = d + r q``, ``d`` = 1 or ``1 - o``, ``r = dS/do``: 0 when the reset
is detached, the default, else ``-theta`` / ``-U``), then ``gJ(t) = gU(t) + gJ_ext +
alpha gJ(t+1)``, ``dL/dI = gJ``. Parameters: ``dL/dlam = sum gU S(t-1)``, ``dL/dalpha = sum gJ
J(t-1)``, ``dL/dtheta`` as in ``lif``. The tape keeps ``U`` (and ``J`` when learning).
"""
import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import fused
from tfsnn.layers.neurons.lif import _reverse_recursion, _sum_to
from tfsnn.timeaxis import TIME_MAJOR, batch_time_perm


def cuba_sequence(current, *, threshold=1.0, leak=1.0, current_decay=0.9, reset="subtract",
                  surrogate="linear", initial_state=None, return_trace=False, detach_reset=True,
                  param_gradients=False, jit_compile=None):
    """CuBa-LIF spikes of ``current`` ``[B, T, ...]``: ``(spikes, trace or None, (J, S))``.

    ``initial_state``: ``(J, S)`` ``[B, ...]`` (default zeros), with gradient; the trace is the
    membrane ``S(t)`` ``[B, T, ...]``. ``threshold``, ``leak``, ``current_decay``: floats or
    tensors (scalar or per channel, broadcastable to a frame); with ``param_gradients`` they
    receive gradients (the tape then also keeps ``J``). ``detach_reset=False``: the reset
    carries the surrogate gradient.
    """
    sur = fused.check_surrogate(sg.get(surrogate))
    fused.reset_of(reset)
    x = tf.convert_to_tensor(current)
    dtype = x.dtype
    perm = batch_time_perm(x.shape.rank)
    theta, lam, alpha = (fused.dynamics(v, dtype, param_gradients)
                         for v in (threshold, leak, current_decay))
    zeros = tf.zeros_like(x[:, 0])
    j0, s0 = (zeros, zeros) if initial_state is None else (
        tuple(tf.cast(s, dtype) + zeros for s in initial_state))

    def forward(x_btn, j0, s0, theta, lam, alpha):
        def step(t, xs, carry):
            j, s = carry
            j = alpha * j + xs[0]
            u = lam * s + j
            fired = u > theta
            o = tf.cast(fired, dtype)
            return (j, fused.apply_reset(reset, u, theta, o, fired)), (u, j)[:n_saved]

        n_saved = 2 if param_gradients else 1
        (j_end, s_end), saved = fused.time_loop(step, [tf.transpose(x_btn, perm)], (j0, s0),
                                                n_saved)
        u_tm = saved[0]
        o_tm = tf.cast(u_tm > theta, dtype)
        trace = (tf.transpose(fused.apply_reset(reset, u_tm, theta, o_tm, o_tm > 0), perm)
                 if return_trace else tf.zeros([0], dtype))
        return (tf.transpose(o_tm, perm), trace, j_end, s_end), saved

    def backward(dys, saved, inputs):
        d_spk, d_trace, d_j_end, d_s_end = dys
        u_tm = saved[0]
        _, j0, s0, theta, lam, alpha = inputs
        o_tm = tf.cast(u_tm > theta, dtype)
        sigma = fused.surrogate_sigma(sur, u_tm / theta - 1.0, o_tm)
        q = sigma / theta
        g_o = tf.transpose(d_spk, perm)
        g_s = tf.transpose(d_trace, perm) if return_trace else tf.zeros_like(g_o)
        g_s = tf.concat([g_s[:-1], g_s[-1:] + d_s_end[None]], axis=0)
        d, r = fused.reset_terms(reset, detach_reset, o_tm, u_tm, theta)
        m = d + r * q if not isinstance(r, float) else d
        k = lam if isinstance(m, float) else tf.broadcast_to(lam * m, tf.shape(u_tm))
        g_u = _reverse_recursion(g_s * m + g_o * q, k)
        e_j = tf.concat([g_u[:-1], g_u[-1:] + d_j_end[None]], axis=0)
        g_j = _reverse_recursion(e_j, alpha)
        grads = (tf.transpose(g_j, perm), alpha * g_j[0], lam * g_u[0])
        if not param_gradients:
            return grads + (tf.zeros_like(theta), tf.zeros_like(lam), tf.zeros_like(alpha))
        s_tm = fused.apply_reset(reset, u_tm, theta, o_tm, o_tm > 0)
        g_state = g_s + lam * TIME_MAJOR.shift_up(g_u)
        g_th = (g_o + g_state * r) * (-sigma * u_tm / tf.square(theta))
        if reset == "subtract":
            g_th = g_th - g_state * o_tm
        down = TIME_MAJOR.shift_down
        return grads + (_sum_to(g_th, theta), _sum_to(g_u * down(s0, s_tm), lam),
                        _sum_to(g_j * down(j0, saved[1]), alpha))

    spikes, trace, j_end, s_end = fused.fused_op(
        forward, backward, (x, j0, s0, theta, lam, alpha), x.shape[1], jit_compile)
    return spikes, (trace if return_trace else None), (j_end, s_end)


@keras.saving.register_keras_serializable(package="tfsnn")
class CuBaLIF(fused.FusedNeuronLayer):
    """Current-based LIF population ``[B, T, ...] -> [B, T, ...]`` (module docstring): the
    ``FusedNeuronLayer`` arguments plus ``current_decay`` (``alpha`` per step, default 0.9) or
    ``tau_syn`` (steps); ``learn_leak`` also trains ``current_decay``. State ``("current",
    "membrane")``."""

    STATE_NAMES = ("current", "membrane")
    FLOATS = (("current_decay", "tau_syn", 0.9),)

    def _run(self, current, state, return_trace):
        return cuba_sequence(current, initial_state=state, return_trace=return_trace,
                             **self._dynamics())

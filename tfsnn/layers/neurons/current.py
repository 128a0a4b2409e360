"""Current-based LIF (CuBa-LIF: synaptic current + membrane; snnTorch ``Synaptic``, NIR
``CubaLIF``) as one fused op.

State ``(J, S)`` (synaptic current, membrane after reset)::

    J(t) = alpha*J(t-1) + I(t);   U(t) = lam*S(t-1) + J(t);   o(t) = H(U/theta - 1)
    S(t) = U - theta*o | U*(1 - o) | U   (reset "subtract" | "zero" | "none", detached)

Backward (hand-written, two reverse recursions): ``gU(t) = gS_ext d + g q + lam d gU(t+1)``
(``q = sigma/theta``, ``d`` = 1 or ``1 - o``), then ``gJ(t) = gU(t) + gJ_ext + alpha gJ(t+1)``,
``dL/dI = gJ``. The tape keeps ``U`` only.
"""
import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import fused
from tfsnn.layers.neurons.lif import _reverse_recursion
from tfsnn.timeaxis import batch_time_perm


def cuba_sequence(current, *, threshold=1.0, leak=1.0, current_decay=0.9, reset="subtract",
                  surrogate="linear", initial_state=None, return_trace=False, jit_compile=None):
    """CuBa-LIF spikes of ``current`` ``[B, T, ...]``: ``(spikes, trace or None, (J, S))``.

    ``initial_state``: ``(J, S)`` ``[B, ...]`` (default zeros), with gradient; the trace is the
    membrane ``S(t)`` ``[B, T, ...]``. ``threshold``: float or scalar tensor (no gradient).
    """
    sur = fused.check_surrogate(sg.get(surrogate))
    fused.reset_of(reset, ("subtract", "zero", "none"))
    x = tf.convert_to_tensor(current)
    dtype = x.dtype
    perm = batch_time_perm(x.shape.rank)
    theta = tf.stop_gradient(tf.cast(threshold, dtype) if not isinstance(threshold, float)
                             else tf.constant(threshold, dtype))
    lam = tf.constant(float(leak), dtype)
    alpha = float(current_decay)
    zeros = tf.zeros_like(x[:, 0])
    j0, s0 = (zeros, zeros) if initial_state is None else (
        tuple(tf.cast(s, dtype) + zeros for s in initial_state))

    def reset_fn(u, o, fired):
        if reset == "subtract":
            return u - theta * o
        return tf.where(fired, tf.zeros_like(u), u) if reset == "zero" else u

    def forward(x_btn, j0, s0):
        def step(t, xs, carry):
            j, s = carry
            j = alpha * j + xs[0]
            u = lam * s + j
            fired = u > theta
            return (j, reset_fn(u, tf.cast(fired, dtype), fired)), (u,)

        (j_end, s_end), (u_tm,) = fused.time_loop(step, [tf.transpose(x_btn, perm)], (j0, s0), 1)
        o_tm = tf.cast(u_tm > theta, dtype)
        trace = (tf.transpose(reset_fn(u_tm, o_tm, o_tm > 0), perm) if return_trace
                 else tf.zeros([0], dtype))
        return (tf.transpose(o_tm, perm), trace, j_end, s_end), (u_tm,)

    def backward(dys, saved, inputs):
        d_spk, d_trace, d_j_end, d_s_end = dys
        (u_tm,) = saved
        o_tm = tf.cast(u_tm > theta, dtype)
        sigma = fused.surrogate_sigma(sur, u_tm / theta - 1.0, o_tm)
        g_o = tf.transpose(d_spk, perm)
        g_s = tf.transpose(d_trace, perm) if return_trace else tf.zeros_like(g_o)
        g_s = tf.concat([g_s[:-1], g_s[-1:] + d_s_end[None]], axis=0)
        d = 1.0 - o_tm if reset == "zero" else tf.ones_like(o_tm)
        g_u = _reverse_recursion(g_s * d + g_o * sigma / theta, lam * d)
        e_j = tf.concat([g_u[:-1], g_u[-1:] + d_j_end[None]], axis=0)
        g_j = _reverse_recursion(e_j, alpha)
        return tf.transpose(g_j, perm), alpha * g_j[0], lam * g_u[0]

    spikes, trace, j_end, s_end = fused.fused_op(forward, backward, (x, j0, s0), x.shape[1],
                                                 jit_compile)
    return spikes, (trace if return_trace else None), (j_end, s_end)


@keras.saving.register_keras_serializable(package="tfsnn")
class CuBaLIF(fused.FusedNeuronLayer):
    """Current-based LIF population ``[B, T, ...] -> [B, T, ...]`` (module docstring): the
    ``FusedNeuronLayer`` arguments plus ``current_decay`` (``alpha`` per step, default 0.9) or
    ``tau_syn`` (steps). ``reset`` also accepts ``"none"``. State ``("current", "membrane")``."""

    STATE_NAMES = ("current", "membrane")
    FLOATS = (("current_decay", "tau_syn", 0.9),)
    RESETS = ("subtract", "zero", "none")

    def _run(self, current, state, return_trace):
        return cuba_sequence(current, threshold=self.theta, leak=self.leak,
                             current_decay=self.current_decay, reset=self.reset,
                             surrogate=self.surrogate, initial_state=state,
                             return_trace=return_trace, jit_compile=self.jit_compile)

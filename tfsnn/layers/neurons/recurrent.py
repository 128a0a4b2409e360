"""Recurrent LIF (snnTorch ``RLeaky``-style, all-to-all): spikes fed back through a trainable
``[N, N]`` matrix ``W``, as one fused op on ``[B, T, N]``.

State ``(S, o)`` (membrane after reset, last spikes)::

    U(t) = lam*S(t-1) + I(t) + o(t-1) W;   o(t) = H(U/theta - 1);   S(t) = reset(U, o)

Backward (hand-written reverse ``tf.while_loop``, one ``[B, N] x [N, N]`` matmul per step):
``gS = gS_ext + lam gU(t+1)``, ``g = dL/do(t) + gU(t+1) W^T + gS r``, ``gU(t) = gS d + g q``
(``q = sigma/theta``, ``d`` = 1 or ``1 - o``, ``r = dS/do``: 0 when the reset is detached, the
default); ``dL/dW = sum_t o(t-1)^T gU(t)`` as one matmul after the loop; ``dL/dlam = sum gU
S(t-1)``, ``dL/dtheta = sum g (-sigma U/theta^2) - gS o [subtract]``.
"""
import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import fused
from tfsnn.layers.neurons.lif import _sum_to
from tfsnn.timeaxis import TIME_MAJOR, batch_time_perm


def recurrent_sequence(current, recurrent_kernel, *, threshold=1.0, leak=1.0, reset="subtract",
                       surrogate="linear", initial_state=None, return_trace=False,
                       detach_reset=True, param_gradients=False, jit_compile=None):
    """Recurrent-LIF spikes of ``current`` ``[B, T, N]`` with ``recurrent_kernel`` ``[N, N]``:
    ``(spikes, trace or None, (S, o))``. ``initial_state``: ``(S, o)`` ``[B, N]`` (default
    zeros), with gradient; the kernel gets its gradient too. ``threshold``, ``leak``: floats or
    tensors (scalar or ``[N]``), with gradient when ``param_gradients``. ``detach_reset=False``:
    the reset carries the surrogate gradient."""
    sur = fused.check_surrogate(sg.get(surrogate))
    fused.reset_of(reset)
    x = tf.convert_to_tensor(current)
    if x.shape.rank != 3:
        raise ValueError(f"current must be [batch, time, units], got shape {x.shape}")
    dtype = x.dtype
    perm = batch_time_perm(3)
    w = tf.cast(recurrent_kernel, dtype)
    theta, lam = (fused.dynamics(v, dtype, param_gradients) for v in (threshold, leak))
    zeros = tf.zeros_like(x[:, 0])
    s0, o0 = (zeros, zeros) if initial_state is None else (
        tuple(tf.cast(s, dtype) + zeros for s in initial_state))

    def forward(x_btn, w, s0, o0, theta, lam):
        def step(t, xs, carry):
            s, o_prev = carry
            u = lam * s + xs[0] + tf.matmul(o_prev, w)
            fired = u > theta
            o = tf.cast(fired, dtype)
            return (fused.apply_reset(reset, u, theta, o, fired), o), (u,)

        (s_end, o_end), (u_tm,) = fused.time_loop(step, [tf.transpose(x_btn, perm)], (s0, o0), 1)
        o_tm = tf.cast(u_tm > theta, dtype)
        trace = (tf.transpose(fused.apply_reset(reset, u_tm, theta, o_tm, o_tm > 0), perm)
                 if return_trace else tf.zeros([0], dtype))
        return (tf.transpose(o_tm, perm), trace, s_end, o_end), (u_tm,)

    def backward(dys, saved, inputs):
        d_spk, d_trace, d_s_end, d_o_end = dys
        (u_tm,) = saved
        _, w, s0, o0, theta, lam = inputs
        o_tm = tf.cast(u_tm > theta, dtype)
        sigma = fused.surrogate_sigma(sur, u_tm / theta - 1.0, o_tm)
        q = sigma / theta
        g_o = tf.transpose(d_spk, perm)
        g_o = tf.concat([g_o[:-1], g_o[-1:] + d_o_end[None]], axis=0)
        g_s = tf.transpose(d_trace, perm) if return_trace else tf.zeros_like(g_o)
        g_s = tf.concat([g_s[:-1], g_s[-1:] + d_s_end[None]], axis=0)
        d, r = fused.reset_terms(reset, detach_reset, o_tm, u_tm, theta)
        r = r if isinstance(r, float) else tf.broadcast_to(r, tf.shape(u_tm))  # -theta: per step
        xs = [g_o, g_s, q] + [v for v in (d, r) if not isinstance(v, float)]

        def step(t, xs, g_u1):
            g_o_t, g_s_t, q_t = xs[:3]
            rest = list(xs[3:])
            d_t = d if isinstance(d, float) else rest.pop(0)
            r_t = r if isinstance(r, float) else rest.pop(0)
            g_state = g_s_t + lam * g_u1
            g = g_o_t + tf.matmul(g_u1, w, transpose_b=True)
            if not isinstance(r_t, float):
                g = g + g_state * r_t
            g_u = (g_state if isinstance(d_t, float) else g_state * d_t) + g * q_t
            return g_u, (g_u, g)[:n_out]

        n_out = 2 if param_gradients else 1
        g_u0, outs = fused.reverse_loop(step, xs, tf.zeros_like(g_o[0]), n_out)
        g_u = outs[0]
        o_prev = tf.concat([o0[None], o_tm[:-1]], axis=0)
        g_w = tf.einsum("tbi,tbj->ij", o_prev, g_u)
        grads = (tf.transpose(g_u, perm), g_w, lam * g_u0, tf.matmul(g_u0, w, transpose_b=True))
        if not param_gradients:
            return grads + (tf.zeros_like(theta), tf.zeros_like(lam))
        g_state = g_s + lam * TIME_MAJOR.shift_up(g_u)
        g_th = outs[1] * (-sigma * u_tm / tf.square(theta))
        if reset == "subtract":
            g_th = g_th - g_state * o_tm
        s_prev = TIME_MAJOR.shift_down(s0, fused.apply_reset(reset, u_tm, theta, o_tm, o_tm > 0))
        return grads + (_sum_to(g_th, theta), _sum_to(g_u * s_prev, lam))

    spikes, trace, s_end, o_end = fused.fused_op(
        forward, backward, (x, w, s0, o0, theta, lam), x.shape[1], jit_compile)
    return spikes, (trace if return_trace else None), (s_end, o_end)


@keras.saving.register_keras_serializable(package="tfsnn")
class RLIF(fused.FusedNeuronLayer):
    """Recurrent LIF population ``[B, T, N] -> [B, T, N]`` (module docstring): the
    ``FusedNeuronLayer`` arguments plus ``recurrent_initializer`` (of the trainable ``[N, N]``
    weight ``recurrent_kernel``; default ``"orthogonal"``). State ``("membrane", "spikes")``."""

    STATE_NAMES = ("membrane", "spikes")

    def __init__(self, threshold=1.0, *, recurrent_initializer="orthogonal", **kwargs):
        super().__init__(threshold, **kwargs)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: input must be [batch, time, units] with known units, "
                             f"got {input_shape}")
        n = input_shape[-1]
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(n, n),
                                                initializer=self.recurrent_initializer)
        super().build(input_shape)

    def _run(self, current, state, return_trace):
        return recurrent_sequence(current, self.recurrent_kernel, initial_state=state,
                                  return_trace=return_trace, **self._dynamics())

    def get_config(self):
        return {**super().get_config(), "recurrent_initializer":
                keras.initializers.serialize(self.recurrent_initializer)}

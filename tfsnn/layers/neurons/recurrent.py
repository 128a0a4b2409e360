"""Recurrent LIF (snnTorch ``RLeaky``-style, all-to-all): spikes fed back through a trainable
``[N, N]`` matrix ``W``, as one fused op on ``[B, T, N]``.

State ``(S, o)`` (membrane after reset, last spikes)::

    U(t) = lam*S(t-1) + I(t) + o(t-1) W;   o(t) = H(U/theta - 1);   S(t) = reset(U, o) (detached)

Backward (hand-written reverse ``tf.while_loop``, one ``[B, N] x [N, N]`` matmul per step):
``gS = gS_ext + lam gU(t+1)``, ``gU(t) = gS d + (dL/do(t) + gU(t+1) W^T) q`` (``q = sigma/theta``,
``d`` = 1 or ``1 - o``); ``dL/dW = sum_t o(t-1)^T gU(t)`` as one matmul after the loop.
"""
import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import fused
from tfsnn.timeaxis import batch_time_perm


def recurrent_sequence(current, recurrent_kernel, *, threshold=1.0, leak=1.0, reset="subtract",
                       surrogate="linear", initial_state=None, return_trace=False,
                       jit_compile=None):
    """Recurrent-LIF spikes of ``current`` ``[B, T, N]`` with ``recurrent_kernel`` ``[N, N]``:
    ``(spikes, trace or None, (S, o))``. ``initial_state``: ``(S, o)`` ``[B, N]`` (default
    zeros), with gradient; the kernel gets its gradient too."""
    sur = fused.check_surrogate(sg.get(surrogate))
    fused.reset_of(reset)
    x = tf.convert_to_tensor(current)
    if x.shape.rank != 3:
        raise ValueError(f"current must be [batch, time, units], got shape {x.shape}")
    dtype = x.dtype
    perm = batch_time_perm(3)
    w = tf.cast(recurrent_kernel, dtype)
    theta = tf.stop_gradient(tf.cast(threshold, dtype) if not isinstance(threshold, float)
                             else tf.constant(threshold, dtype))
    lam = tf.constant(float(leak), dtype)
    zeros = tf.zeros_like(x[:, 0])
    s0, o0 = (zeros, zeros) if initial_state is None else (
        tuple(tf.cast(s, dtype) + zeros for s in initial_state))

    def reset_fn(u, o, fired):
        return u - theta * o if reset == "subtract" else tf.where(fired, tf.zeros_like(u), u)

    def forward(x_btn, w, s0, o0):
        def step(t, xs, carry):
            s, o_prev = carry
            u = lam * s + xs[0] + tf.matmul(o_prev, w)
            fired = u > theta
            o = tf.cast(fired, dtype)
            return (reset_fn(u, o, fired), o), (u,)

        (s_end, o_end), (u_tm,) = fused.time_loop(step, [tf.transpose(x_btn, perm)], (s0, o0), 1)
        o_tm = tf.cast(u_tm > theta, dtype)
        trace = (tf.transpose(reset_fn(u_tm, o_tm, o_tm > 0), perm) if return_trace
                 else tf.zeros([0], dtype))
        return (tf.transpose(o_tm, perm), trace, s_end, o_end), (u_tm,)

    def backward(dys, saved, inputs):
        d_spk, d_trace, d_s_end, d_o_end = dys
        (u_tm,) = saved
        w, o0 = inputs[1], inputs[3]
        o_tm = tf.cast(u_tm > theta, dtype)
        q = fused.surrogate_sigma(sur, u_tm / theta - 1.0, o_tm) / theta
        g_o = tf.transpose(d_spk, perm)
        g_o = tf.concat([g_o[:-1], g_o[-1:] + d_o_end[None]], axis=0)
        g_s = tf.transpose(d_trace, perm) if return_trace else tf.zeros_like(g_o)
        g_s = tf.concat([g_s[:-1], g_s[-1:] + d_s_end[None]], axis=0)
        d = 1.0 - o_tm if reset == "zero" else tf.ones_like(o_tm)

        def step(t, xs, g_u1):
            g_o_t, g_s_t, q_t, d_t = xs
            g_u = (g_s_t + lam * g_u1) * d_t + (g_o_t + tf.matmul(g_u1, w, transpose_b=True)) * q_t
            return g_u, (g_u,)

        g_u0, (g_u,) = fused.reverse_loop(step, [g_o, g_s, q, d], tf.zeros_like(g_o[0]), 1)
        o_prev = tf.concat([o0[None], o_tm[:-1]], axis=0)
        g_w = tf.einsum("tbi,tbj->ij", o_prev, g_u)
        return (tf.transpose(g_u, perm), g_w, lam * g_u0,
                tf.matmul(g_u0, w, transpose_b=True))

    spikes, trace, s_end, o_end = fused.fused_op(forward, backward, (x, w, s0, o0), x.shape[1],
                                                 jit_compile)
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
        return recurrent_sequence(current, self.recurrent_kernel, threshold=self.theta,
                                  leak=self.leak, reset=self.reset, surrogate=self.surrogate,
                                  initial_state=state, return_trace=return_trace,
                                  jit_compile=self.jit_compile)

    def get_config(self):
        return {**super().get_config(), "recurrent_initializer":
                keras.initializers.serialize(self.recurrent_initializer)}

"""Spiking neuron layers trained with surrogate gradients (docs/specs/hybrid_and_spike_bp.md §2-§4).

Tensors are ``[batch, time, ...]``. A neuron layer maps an input-current sequence ``I`` to a
spike sequence ``o`` (same shape, values 0/1 in ``I``'s dtype). The whole recursion over time is
**one** ``tf.custom_gradient`` op (``spike_sequence``) whose forward is a ``tf.while_loop`` and
whose backward is the hand-written recursion of docs/specs/hybrid_and_spike_bp.md §2.7 / §3.5, so the tape stores only the
output spikes plus one auxiliary sequence, the one the surrogate declares in
``Surrogate.needs``: the pre-spike membrane (``"membrane"``), the spike age (``"spike_age"``,
STDB), or nothing (``"spike"``, Lee's spike-gated surrogate). The loops run time-major
(``[T, batch, ...]``) in graph mode and batch-major (``[batch, T, ...]``, in-place per-step
writes: no transposes, ``tfsnn.timeaxis.StepLayout``) when XLA compiles them.

Structure: ``NeuronParams`` (frozen, validated settings) -> ``spike_sequence`` (the op) built
from ``_forward_loop`` (the recursion, records what ``needs`` asks for), ``_surrogate_step``
(``sigma`` from that record) and ``_backward_recursion`` (``dL/dI``). The layers ``LIF``, ``IF``,
``RathiNeuron``, ``LeeNeuron`` hold a ``NeuronParams``; the last two only change ``DEFAULTS``.

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
import dataclasses
import math

import keras
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons.base import NeuronLayer, exact_constant
from tfsnn.timeaxis import TIME_MAJOR, StepLayout

RESETS = ("subtract", "zero", "none")
# jit_compile=None: XLA-compile the loops when tracing a graph with at least this many steps
# (JIT_AUTO; jit_compile=False opts out, True opts in at any T).
JIT_MIN_STEPS = 64
JIT_AUTO = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class NeuronParams:
    """Everything but the input current that defines an IF/LIF population; immutable, validated.

    ``threshold``: float > 0, or a scalar tensor / variable (not checked; no gradient flows to
    it). ``leak`` in (0, 1] per step (1 = IF). ``reset``: ``"subtract"`` (soft) or ``"zero"``
    (hard). ``surrogate``: a ``tfsnn.surrogates`` name, instance or config (stored as an
    instance). ``fire_before_integrate``: Rathi's one-step delay. ``leak_in_grad``: False gives
    Lee's identity leak in the backward pass. ``ng_correction``: Lee's leak-aware gain NG.
    ``t_last0``: the spike time (steps) assumed before t = 0, STDB's -999 sentinel.
    ``detach_reset``: True (default, as in both originals) gives the reset no gradient; False
    lets it carry the surrogate gradient. ``reset="none"`` keeps the membrane (no reset).
    ``leak`` may also be a tensor / variable (scalar or per-channel, not checked) in
    ``spike_sequence``. ``replace(**changes)`` returns a validated copy.
    """

    threshold: object = 1.0
    leak: float = 1.0
    reset: str = "subtract"
    surrogate: object = "linear"
    fire_before_integrate: bool = False
    leak_in_grad: bool = True
    ng_correction: bool = False
    t_last0: float = -999.0
    detach_reset: bool = True

    def __post_init__(self):
        th = self.threshold
        if isinstance(th, (int, float)) and not th > 0:
            raise ValueError(f"threshold must be > 0, got {th!r}")
        leak_is_number = isinstance(self.leak, (int, float))
        if leak_is_number and not 0.0 < float(self.leak) <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {self.leak!r}")
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {self.reset!r}")
        if not leak_is_number and self.ng_correction:
            raise ValueError("ng_correction needs a float leak, got a tensor leak")
        normalised = dict(leak=float(self.leak) if leak_is_number else self.leak,
                          surrogate=sg.get(self.surrogate),
                          fire_before_integrate=bool(self.fire_before_integrate),
                          leak_in_grad=bool(self.leak_in_grad),
                          ng_correction=bool(self.ng_correction), t_last0=float(self.t_last0),
                          detach_reset=bool(self.detach_reset))
        if normalised["surrogate"].needs not in sg.NEEDS:
            raise ValueError(f"surrogate {self.surrogate!r}: needs must be one of {sg.NEEDS}")
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes):
        """A validated copy with ``changes`` (field names of this class)."""
        return dataclasses.replace(self, **changes)

    def get_config(self):
        """The fields as a dict (surrogate serialized); ``NeuronParams(**config)`` rebuilds it.

        Fields added after the first release (``NEW_FIELDS``) appear only when not at their
        default, so older configs and the configs of default layers are unchanged.
        """
        cfg = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in NEW_FIELDS or getattr(self, f.name) != f.default}
        return {**cfg, "surrogate": sg.serialize(self.surrogate)}

    @property
    def leak_grad(self):
        """The leak of the backward recursion: ``leak`` if ``leak_in_grad`` else 1."""
        return self.leak if self.leak_in_grad else 1.0


PARAM_NAMES = tuple(f.name for f in dataclasses.fields(NeuronParams))
NEW_FIELDS = ("detach_reset",)  # written to configs only when not at their default


def _reverse_recursion(e, k, layout=TIME_MAJOR):
    """``c(t) = e(t) + k(t) * c(t+1)``, ``c(T) = 0``, over the time axis of ``layout``. ``k``:
    float, a tensor shaped as ``e`` (one factor per step), or a tensor of lower rank than ``e``
    (the same factor at every step: a scalar, or broadcastable to a frame ``[B, ...]``, e.g. per
    channel). Batch-major (XLA): ``c`` overwrites ``e`` in place (no second buffer)."""
    if isinstance(k, float) and k == 1.0 and not layout.axis:
        return tf.cumsum(e, axis=0, reverse=True)  # (XLA's cumsum is quadratic in T)
    n = layout.steps(e)
    k_at = (layout.reader(k) if not isinstance(k, float) and k.shape.rank == e.shape.rank
            else lambda t: k)
    in_place = bool(layout.axis)
    e_at = layout.reader(e)

    def body(i, c, out):
        t = n - 1 - i
        c = (out[:, t] if in_place else e_at(t)) + k_at(t) * c
        return i + 1, c, layout.write(out, t, c)

    c0 = tf.zeros_like(layout.frame(e, 0))
    out = e if in_place else layout.buffer(c0, n)
    out = tf.while_loop(lambda i, c, o: i < n, body, (tf.constant(0), c0, out),
                        maximum_iterations=n)[2]
    return layout.stack(out)


def _lee_ng(o, leak, axis=0):
    """``NG`` (``lee_ng``) of spikes ``o`` whose time axis is ``axis``; a frame ``[B, ...]``."""
    n = tf.shape(o)[axis]
    dtype = o.dtype
    w = tf.pow(tf.constant(float(leak), dtype), tf.cast(n - 1 - tf.range(n), dtype))
    lf = tf.tensordot(w, o, axes=[[0], [axis]])
    cnt = tf.reduce_sum(o, axis=axis)
    cnt = tf.where(cnt < 1e-3, tf.ones_like(cnt), cnt)
    return tf.cast(lf > 1e-3, dtype) + math.log(leak) * lf / cnt


@tf.autograph.experimental.do_not_convert
def lee_ng(spikes, leak):
    """Lee's leak correction ``NG = 1[LF > 1e-3] + ln(leak) * LF / N``: ``[B, T, ...] -> [B, ...]``.

    ``LF = sum_t leak^(T-1-t) o(t)`` (leaky spike trace at the last step), ``N`` = spike count
    (1 where < 1e-3). 0 for silent neurons; in ``[1 + ln leak, 1 + ln(leak) leak^(T-1)]`` else.
    """
    return _lee_ng(tf.convert_to_tensor(spikes), float(leak), axis=1)


def _forward_loop(i_seq, theta, params, layout=TIME_MAJOR):
    """The neuron recursion over time as one ``tf.while_loop``.

    ``i_seq``: input current, ``[T, B, ...]`` or ``[B, T, ...]`` per ``layout`` (as are the
    sequences returned); ``theta``: scalar threshold in ``i_seq``'s dtype.
    Returns ``(o, saved, v_end)``: spikes; what ``params.surrogate.needs`` asks the backward
    pass to keep (``"membrane"``: the pre-spike membrane ``U(t)``, from which the spikes are
    recomputed; ``"spike_age"``: ``t - t_last``) or ``[0]`` (``"spike"``: the spikes suffice);
    the final state ``R(T-1)`` / ``V(T-1)`` ``[B, ...]``.
    """
    dtype = i_seq.dtype
    lam = params.leak
    delayed = params.fire_before_integrate
    zero_reset = params.reset == "zero"
    needs = params.surrogate.needs
    n = layout.steps(i_seq)
    i_at = layout.reader(i_seq)
    zeros = tf.zeros_like(layout.frame(i_seq, 0))
    # "membrane": the spikes are recomputed from the saved membrane (one write per step)
    o_ta = layout.buffer(zeros, n) if needs != "membrane" else 0
    a_ta = layout.buffer(zeros, n) if needs != "spike" else None
    t_last = zeros + tf.cast(params.t_last0, dtype)

    def body(t, v, t_last, o_ta, a_ta):
        it = i_at(t)
        u = v if delayed else (v if lam == 1.0 else lam * v) + it
        fired = u > theta
        o = tf.cast(fired, dtype)
        if needs == "membrane":
            a_ta = layout.write(a_ta, t, u)
        elif needs == "spike_age":
            tf_ = tf.cast(t, dtype)
            a_ta = layout.write(a_ta, t, tf_ - t_last)
            t_last = tf.where(fired, tf_, t_last)
        if delayed:
            lu = u if lam == 1.0 else lam * u
            v = (tf.where(fired, zeros, lu) if zero_reset else lu - theta * o) + it
        else:
            v = tf.where(fired, zeros, u) if zero_reset else u - theta * o
        return t + 1, v, t_last, layout.write(o_ta, t, o) if needs != "membrane" else o_ta, a_ta

    loop_vars = (tf.constant(0), zeros, t_last, o_ta, a_ta if a_ta is not None else 0)
    _, v_end, _, o_ta, a_ta = tf.while_loop(
        lambda t, *_: t < n, body, loop_vars, maximum_iterations=n)
    saved = layout.stack(a_ta) if needs != "spike" else tf.zeros([0], dtype)
    o = tf.cast(saved > theta, dtype) if needs == "membrane" else layout.stack(o_ta)
    return o, saved, v_end


def _surrogate_step(surrogate, saved, o_tm, theta):
    """``sigma(t) = do/dz`` from ``saved``, what ``surrogate.needs`` had kept (the membrane
    ``U`` or the spike age), and the spikes; sequences or one frame alike."""
    needs = surrogate.needs
    if needs == "membrane":
        return surrogate.grad(saved / theta - 1.0, o_tm)
    if needs == "spike_age":
        return surrogate.grad(tf.zeros_like(saved), o_tm, saved)  # independent of z
    return surrogate.grad(o_tm - 0.5, o_tm)  # "spike"; z: a stand-in with the spike's sign


def _backward_recursion(g, sigma, o, theta, params, layout=TIME_MAJOR):
    """``dL/dI`` from ``g`` (``dL/do``, times NG if on) and ``sigma``.

    ``c(t) = g(t) * sigma(t) / theta + k(t) * c(t+1)``, ``k(t) = lam_g * (1 or 1 - o(t))``
    (module docstring); all sequences in ``layout``. With the one-step delay
    ``dL/dI(t) = c(t+1)``, ``dL/dI(T-1) = 0``.
    """
    e = g * sigma / theta  # one vectorised pass (multi-threaded; a loop body is not)
    lam_g = params.leak_grad
    k = (lam_g * (1.0 - o)) if params.reset == "zero" else lam_g
    c = _reverse_recursion(e, k, layout)
    return layout.shift_up(c) if params.fire_before_integrate else c


def _xla(fn):
    """``fn`` as an XLA-compiled ``tf.function``, traced as plain Python (``autograph=False``).

    The op has no tensor-dependent Python control flow, so AutoGraph has nothing to convert;
    converting would re-read this file's source at trace time (``inspect``), and a copy edited
    after import (another checkout, an editor saving mid-run) then yields a function built from
    the wrong lines (how ``test_fused_in_graph_with_xla_matches_reference`` once failed).
    """
    return tf.function(fn, jit_compile=True, autograph=False)


def _auto_jit(jit_compile, steps):
    """``jit_compile`` resolved (None: XLA when tracing a graph of >= ``JIT_MIN_STEPS`` steps)."""
    if jit_compile is not None:
        return bool(jit_compile)
    return JIT_AUTO and not tf.executing_eagerly() and steps is not None and steps >= JIT_MIN_STEPS


# --------------------------------------------------------------------------- general op
# Initial state, membrane trace, final state with gradient, reset "none" / with gradient,
# tensor (per-channel, trainable) threshold and leak. The state S is R (standard ordering) or
# V (fire_before_integrate):
#   standard: U(t) = lam*S(t-1) + I(t);  o = H(U/theta - 1);  S(t) = reset(U, o)
#   delayed:  U(t) = S(t-1);             o = H(U/theta - 1);  S(t) = reset(lam*U, o) + I(t)
# reset(W, o) = W - theta*o | W*(1 - o) | W. Backward with q = sigma/theta (= do/dU), d = dS/dW
# at fixed o (1 or 1 - o), r = dS/do (-theta | -W | 0; 0 when the reset is detached), gS_ext the
# trace / final-state gradient and lam_g = lam (1 if not leak_in_grad):
#   standard: m = d + r q;      gU(t) = gS_ext m + g q + lam_g m gU(t+1);  gS = gS_ext + lam_g gU(t+1)
#             dL/dI = gU, dL/dS(-1) = lam_g gU(0), dL/dlam = sum gU(t) S(t-1)
#   delayed:  m = lam_g d + r q; gU(t) = gS_ext m + g q + m gU(t+1);        gS = gS_ext + gU(t+1)
#             dL/dI = gS, dL/dS(-1) = gU(0), dL/dlam = sum gS d U
#   dL/dtheta = sum (g + gS r) (-sigma U / theta^2) + gS (-o if reset == "subtract")


def _reset(w, o, fired, theta, reset):
    if reset == "subtract":
        return w - theta * o
    if reset == "zero":
        return tf.where(fired, tf.zeros_like(w), w)
    return w


def _general_forward_loop(i_btn, v0, theta, lam, params, layout=TIME_MAJOR, keep_u=True,
                          record=False):
    """``(u, age, v_end, o, s)`` from the current ``i_btn`` ``[B, T, ...]`` (read one step at a
    time: no transposed copy of the input) and the initial state ``v0``: the pre-spike membrane
    (``keep_u``, else None) and spike age (or ``[0]``), sequences in ``layout``; the final
    state ``[B, ...]``; with ``record``, the spikes and the state trace ``S(t)`` written by the
    loop (else None; ``S`` is the loop's carried state, so equal to ``_state_trace``)."""
    dtype = i_btn.dtype
    delayed = params.fire_before_integrate
    needs_age = params.surrogate.needs == "spike_age"
    n = tf.shape(i_btn)[1]
    i0 = tf.zeros_like(i_btn[:, 0])
    bufs = [layout.buffer(i0, n) if keep else 0 for keep in (keep_u, needs_age, record, record)]
    t_last = i0 + tf.cast(params.t_last0, dtype)

    def body(t, v, t_last, bufs):
        u_b, a_b, o_b, s_b = bufs
        it = i_btn[:, t]
        u = v if delayed else lam * v + it
        fired = u > theta
        o = tf.cast(fired, dtype)
        if keep_u:
            u_b = layout.write(u_b, t, u)
        if needs_age:
            tf_ = tf.cast(t, dtype)
            a_b = layout.write(a_b, t, tf_ - t_last)
            t_last = tf.where(fired, tf_, t_last)
        v = _reset(lam * u if delayed else u, o, fired, theta, params.reset)
        v = v + it if delayed else v
        if record:
            o_b, s_b = layout.write(o_b, t, o), layout.write(s_b, t, v)
        return t + 1, v, t_last, [u_b, a_b, o_b, s_b]

    _, v_end, _, bufs = tf.while_loop(
        lambda t, *_: t < n, body, (tf.constant(0), v0 + i0, t_last, bufs),
        maximum_iterations=n)
    u, a, o, s_seq = (layout.stack(b) if keep else None
                      for b, keep in zip(bufs, (keep_u, needs_age, record, record)))
    return u, (a if needs_age else tf.zeros([0], dtype)), v_end, o, s_seq


def _state_trace(u, o, i, theta, lam, params):
    """The state ``S(t)`` (post-reset membrane) from the forward record (any one layout)."""
    delayed = params.fire_before_integrate
    s = _reset(lam * u if delayed else u, o, o > 0, theta, params.reset)
    return s + i if delayed else s


def _sum_to(g, ref):
    """Sum ``g`` ``[T, B, *S]`` to the shape of ``ref`` (a scalar or broadcastable to ``S``)."""
    rank = ref.shape.rank
    if rank == 0:
        return tf.reduce_sum(g)
    g = tf.reduce_sum(g, axis=list(range(g.shape.rank - rank)))
    ones = [i for i, d in enumerate(ref.shape) if d == 1]
    return tf.reduce_sum(g, axis=ones, keepdims=True) if ones else g


def _general_backward(g_o, g_s, u_tm, o_tm, age, i_tm, v0, theta, lam, params,
                      param_gradients=True, layout=TIME_MAJOR):
    """``(dL/dI, dL/dS(-1), dL/dtheta, dL/dlam)`` of the general op (block comment above); the
    sequences (``*_tm``, ``g_o``, ``g_s``, ``age``, ``dL/dI``) are in ``layout``.

    ``param_gradients`` False: ``dL/dtheta`` and ``dL/dlam`` are zeros (not computed; ``i_tm``
    is then unused and may be None).
    With a detached (or no) reset and no zero reset the recursion factor is the constant
    ``lam_g`` (no per-step factor tensor). The recursion's terms are computed in vectorised
    passes before the loop (a loop body runs on one thread).
    """
    sur = params.surrogate
    sigma = _surrogate_step(sur, u_tm if sur.needs == "membrane" else age, o_tm, theta)
    delayed = params.fire_before_integrate
    lam_g = lam if params.leak_in_grad else tf.ones_like(lam)
    q = sigma / theta
    zero = params.reset == "zero"
    no_r = params.detach_reset or params.reset == "none"
    if no_r and not zero:  # m = 1 (standard) or lam_g (delayed): constant in time
        e = g_o * q + (g_s * lam_g if delayed else g_s)
        g_u = _reverse_recursion(e, lam_g, layout)
        d = r = None
    else:
        d = 1.0 - o_tm if zero else 1.0
        if no_r:
            r = 0.0
        elif params.reset == "subtract":
            r = -theta
        else:
            r = -(lam * u_tm if delayed else u_tm)
        m = (lam_g * d if delayed else d) + r * q
        k = m if delayed else lam_g * m
        g_u = _reverse_recursion(g_s * m + g_o * q, tf.broadcast_to(k, tf.shape(u_tm)), layout)
    if delayed:
        g_state = g_s + layout.shift_up(g_u)
        g_in, g_v0 = g_state, layout.frame(g_u, 0)
    else:
        g_in, g_v0 = g_u, lam_g * layout.frame(g_u, 0)
    g_v0 = _sum_to(g_v0[None], v0)
    if not param_gradients:
        return g_in, g_v0, tf.zeros_like(theta), tf.zeros_like(lam)
    d = 1.0 if d is None else d
    r = 0.0 if r is None else r
    if delayed:
        g_lam_full = g_state * d * u_tm
    else:
        g_state = g_s + lam_g * layout.shift_up(g_u)
        s_prev = layout.shift_down(v0, _state_trace(u_tm, o_tm, i_tm, theta, lam, params))
        g_lam_full = g_u * s_prev
    g_th_full = (g_o + g_state * r) * (-sigma * u_tm / tf.square(theta))
    if params.reset == "subtract":
        g_th_full = g_th_full - g_state * o_tm
    g_lam = _sum_to(g_lam_full, lam) if params.leak_in_grad else tf.zeros_like(lam)
    return g_in, g_v0, _sum_to(g_th_full, theta), g_lam


def _general_op(x, params, initial_state, theta, lam, return_trace, param_gradients,
                jit_compile):
    """The general op on ``[B, T, ...]``: ``(spikes, trace or None, final state)``.

    Inside, the sequences are time-major, or batch-major when XLA compiles the op
    (``StepLayout.for_xla``: then nothing is transposed)."""
    dtype = x.dtype
    v0 = (tf.zeros([], dtype) if initial_state is None
          else tf.cast(tf.convert_to_tensor(initial_state), dtype))
    if not param_gradients:
        theta, lam = tf.stop_gradient(theta), tf.stop_gradient(lam)
    jit = _auto_jit(jit_compile, x.shape[1])
    lay = StepLayout.for_xla(jit)
    # With a recorded trace S, standard ordering and a subtract / no reset, the backward pass
    # recovers U = S + theta*o (batch-major: S and o are the outputs themselves), so the tape
    # keeps no membrane. Exact unless U > 2 theta (then within 1 ulp; Sterbenz); o is exact.
    recover = (return_trace and lay.axis and not params.fire_before_integrate
               and params.reset in ("subtract", "none"))

    def forward(x_btn, v0, theta, lam):
        u, age, v_end, o, s_seq = _general_forward_loop(x_btn, v0, theta, lam, params, lay,
                                                        keep_u=not recover, record=return_trace)
        if not return_trace:
            o = tf.cast(u > theta, dtype)  # o(t) = U(t) > theta
        trace = lay.to_batch_major(s_seq) if return_trace else tf.zeros([0], dtype)
        ng = _lee_ng(o, params.leak, lay.axis) if params.ng_correction else tf.zeros([0], dtype)
        u = tf.zeros([0], dtype) if recover else u
        return lay.to_batch_major(o), trace, v_end, u, age, ng

    def backward(d_spikes, d_trace, d_end, u, age, ng, spikes, trace, x_btn, v0, theta, lam):
        if recover:  # batch-major: the outputs are the sequences
            u = trace + theta * spikes if params.reset == "subtract" else trace
            o = spikes
        else:
            o = tf.cast(u > theta, dtype)
        g_o = lay.from_batch_major(d_spikes)
        if params.ng_correction:
            g_o = g_o * tf.expand_dims(ng, lay.axis)
        g_s = lay.from_batch_major(d_trace) if return_trace else tf.zeros_like(g_o)
        g_s = lay.add_to_last(g_s, d_end)
        i = lay.from_batch_major(x_btn) if param_gradients else None
        g_in, g_v0, g_th, g_lam = _general_backward(
            g_o, g_s, u, o, age, i, v0, theta, lam, params, param_gradients, lay)
        return lay.to_batch_major(g_in), g_v0, g_th, g_lam

    if jit:
        forward, backward = _xla(forward), _xla(backward)

    @tf.custom_gradient
    def op(x_btn, v0, theta, lam):
        sd = tf.stop_gradient
        spikes, trace, v_end, u_tm, age, ng = forward(sd(x_btn), sd(v0), sd(theta), sd(lam))

        def grad(d_spikes, d_trace, d_end):
            d_trace = tf.zeros_like(trace) if d_trace is None else d_trace
            d_end = tf.zeros_like(v_end) if d_end is None else d_end
            return backward(sd(d_spikes), sd(d_trace), sd(d_end), u_tm, age, ng, spikes, trace,
                            sd(x_btn), sd(v0), sd(theta), sd(lam))

        return (spikes, trace, v_end), grad

    spikes, trace, v_end = op(x, v0, theta, lam)
    return spikes, (trace if return_trace else None), v_end


@tf.autograph.experimental.do_not_convert  # plain Python (see _xla), even in a tf.function
def spike_sequence(current, params=None, *, initial_state=None, return_trace=False,
                   return_state=False, return_membrane=False, param_gradients=False,
                   jit_compile=None, **param_changes):
    """Spikes ``[B, T, ...]`` of an IF/LIF population driven by ``current`` ``[B, T, ...]``.

    One custom-gradient op (module docstring): ``_forward_loop`` forward; ``_surrogate_step`` and
    ``_backward_recursion`` backward. ``params``: a ``NeuronParams`` (default ``NeuronParams()``);
    keyword ``param_changes`` (its field names, e.g. ``threshold=layer.theta``) build or amend it.

    * ``initial_state``: the state ``S(-1)`` ``[B, ...]`` (``R`` of the standard ordering, ``V``
      with ``fire_before_integrate``; default 0); it receives a gradient.
    * ``return_trace``: also return the state trace ``S(t)`` ``[B, T, ...]`` (the membrane after
      the reset, as snnTorch / Norse / SpikingJelly record it), with gradient.
    * ``return_state``: also return the final state ``S(T-1)`` ``[B, ...]``, with gradient (for
      truncated BPTT across calls: ``initial_state`` of the next call).
    * ``return_membrane`` (legacy): also return ``S(T-1)`` without gradient.
    * ``param_gradients``: the threshold and leak (tensors or variables; scalar or broadcastable
      to a frame, e.g. per channel ``[C]``) receive gradients; else they are constants.

    Returns ``spikes``, or the tuple ``(spikes[, trace][, state])`` when ``return_trace`` or
    ``return_state``, or ``(spikes, state)`` with ``return_membrane``. Initial state, outputs
    other than the spikes, ``reset="none"``, ``detach_reset=False``, a tensor leak and
    ``param_gradients`` use the general op (block comment above; the tape keeps only ``U(t)``,
    the spikes are recomputed from it, and the threshold / leak gradients are computed only
    with ``param_gradients``); without
    them the op of the first release runs unchanged. ``jit_compile``: run the forward loop and
    the backward recursion as XLA-compiled functions (None: when tracing a graph whose static T
    is at least ``JIT_MIN_STEPS``; never eagerly).
    """
    if params is None:
        params = NeuronParams(**param_changes)
    elif not isinstance(params, NeuronParams):
        raise TypeError(f"params must be a NeuronParams, got {params!r}; pass the neuron's "
                        "settings as keywords (threshold=..., leak=..., ...)")
    elif param_changes:
        params = params.replace(**param_changes)
    if return_membrane and (return_trace or return_state):
        raise ValueError("return_membrane (legacy, no gradient) cannot be combined with "
                         "return_trace / return_state; use return_state=True")
    x = tf.convert_to_tensor(current)
    if not x.dtype.is_floating:
        raise TypeError(f"current must be a float tensor, got {x.dtype}")
    if x.shape.rank is not None and x.shape.rank < 2:
        raise ValueError(f"current must be [batch, time, ...], got shape {x.shape}")
    dtype = x.dtype
    threshold = params.threshold
    theta = (tf.constant(float(threshold), dtype) if isinstance(threshold, (int, float))
             else tf.cast(threshold, dtype))  # cast of a Python float would round via float32
    general = (initial_state is not None or return_trace or return_state or param_gradients
               or params.reset == "none" or not params.detach_reset
               or not isinstance(params.leak, float))
    if general:
        lam = (tf.constant(params.leak, dtype) if isinstance(params.leak, float)
               else tf.cast(params.leak, dtype))
        spikes, trace, v_end = _general_op(x, params, initial_state, theta, lam, return_trace,
                                           param_gradients, jit_compile)
        if return_membrane:
            return spikes, tf.stop_gradient(v_end)
        if not (return_trace or return_state):
            return spikes
        return (spikes,) + ((trace,) if return_trace else ()) + ((v_end,) if return_state else ())
    return _legacy_op(x, params, theta, return_membrane, jit_compile)


def _legacy_op(x, params, theta, return_membrane, jit_compile):
    """The op of the first release (no state in or out with gradient, scalar constants)."""
    dtype = x.dtype
    theta = tf.stop_gradient(theta)
    jit = _auto_jit(jit_compile, x.shape[1])
    lay = StepLayout.for_xla(jit)  # batch-major inside XLA: no transposes

    membrane = params.surrogate.needs == "membrane"
    # The spikes the backward pass reads: recomputed from the saved membrane, else the output
    # itself (batch-major) or a time-major copy, kept only then ("o_kept").
    keep_o = not membrane and not lay.axis

    def forward(x_btn, theta):
        o, saved, v_end = _forward_loop(lay.from_batch_major(x_btn), theta, params, lay)
        ng = _lee_ng(o, params.leak, lay.axis) if params.ng_correction else tf.zeros([0], dtype)
        return lay.to_batch_major(o), (o if keep_o else tf.zeros([0], dtype)), saved, ng, v_end

    def backward(d_spikes, spikes, o_kept, saved, ng, theta):
        if membrane:
            o = tf.cast(saved > theta, dtype)
        else:
            o = o_kept if keep_o else spikes
        g = lay.from_batch_major(d_spikes)
        if params.ng_correction:  # Lee's gain on dL/do (ops in this order: bit-identical grads)
            g = g * tf.expand_dims(ng, lay.axis)
        sigma = _surrogate_step(params.surrogate, saved, o, theta)
        return lay.to_batch_major(_backward_recursion(g, sigma, o, theta, params, lay))

    if jit:
        forward, backward = _xla(forward), _xla(backward)

    @tf.custom_gradient
    def op(x_btn):
        # stop_gradient: the tape must not differentiate the (XLA) function itself; it would
        # try to export the loop's TensorLists. The gradient is ``grad`` below.
        spikes, o_kept, saved, ng, v_end = forward(tf.stop_gradient(x_btn), theta)

        def grad(d_spikes, *unused):
            return backward(tf.stop_gradient(d_spikes), spikes, o_kept, saved, ng, theta)

        if return_membrane:
            return (spikes, tf.stop_gradient(v_end)), grad
        return spikes, grad

    return op(x)


# --------------------------------------------------------------------------- Keras layers

def _param_property(name, doc):
    """A layer attribute backed by ``self.params.<name>``; setting it replaces ``params``."""
    def get(self):
        return getattr(self.params, name)

    def set_(self, value):
        self.params = self.params.replace(**{name: value})

    return property(get, set_, doc=doc)


@keras.saving.register_keras_serializable(package="tfsnn")
class UnitInterval(keras.constraints.Constraint):
    """Keeps a trainable leak in ``[0, 1]`` (clips after each update)."""

    def __call__(self, w):
        return keras.ops.clip(w, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="tfsnn")
class LIF(NeuronLayer):
    """Leaky integrate-and-fire population: input currents ``[B, T, ...]`` -> spikes ``[B, T, ...]``.

    Arguments: ``threshold`` (positional or keyword) and the other ``NeuronParams`` fields as
    keywords (``leak``, ``reset``, ``surrogate``, ``fire_before_integrate``, ``leak_in_grad``,
    ``ng_correction``, ``t_last0``, ``detach_reset``); unset ones take the class's ``DEFAULTS``,
    then ``NeuronParams``' defaults (``LIF()`` is an IF neuron: leak 1). ``tau`` (steps, > 0)
    instead of ``leak`` sets ``leak = exp(-1/tau)``. ``threshold`` is the initial value of the
    weight ``theta`` (saved with the model; threshold balancing writes it).

    Learnable dynamics: ``learn_threshold`` / ``learn_leak`` make ``theta`` / the weight
    ``leak_weight`` trainable (gradients from the fused op, see ``spike_sequence``);
    ``per_channel`` gives both one value per channel (last axis, ``[C]``). The leak weight exists
    when ``learn_leak`` or ``per_channel`` and is clipped to ``[0, 1]``.

    State and recording (``tfsnn.layers.neurons.base``): ``call(current, initial_state=None)``,
    ``return_trace``, ``return_state``, ``stateful`` + ``reset_states()``, ``step(x_t, state)``.
    The state is the membrane after the reset (``R``; ``V`` with ``fire_before_integrate``).
    ``call(..., return_membrane=True)`` (legacy) also returns the final state without gradient.
    ``jit_compile``: XLA for the op's loops (None: automatic, see ``spike_sequence``).
    ``params`` holds the settings; ``leak``, ``reset``, ... (and ``threshold_init``) read and
    replace it.
    """

    DEFAULTS = {}  # NeuronParams fields whose default a subclass changes
    LEARN_OPTIONS = ("learn_threshold", "learn_leak", "per_channel")

    threshold_init = _param_property("threshold", "Initial value of ``theta`` (float).")
    leak = _param_property("leak", "Per-step membrane factor in (0, 1] (initial value of "
                           "``leak_weight`` when there is one).")
    reset = _param_property("reset", '``"subtract"``, ``"zero"`` or ``"none"``.')
    surrogate = _param_property("surrogate", "The ``tfsnn.surrogates.Surrogate``.")
    fire_before_integrate = _param_property("fire_before_integrate", "Rathi's one-step delay.")
    leak_in_grad = _param_property("leak_in_grad", "False: identity leak in the gradient.")
    ng_correction = _param_property("ng_correction", "Lee's leak-aware gain NG.")
    t_last0 = _param_property("t_last0", "Spike time assumed before t = 0 (steps).")
    detach_reset = _param_property("detach_reset", "False: the reset carries gradient.")

    def __init__(self, threshold=None, *, tau=None, learn_threshold=False, learn_leak=False,
                 per_channel=False, jit_compile=None, **kwargs):
        given = {k: kwargs.pop(k) for k in PARAM_NAMES if k in kwargs}
        if threshold is not None:
            given["threshold"] = threshold
        if tau is not None:
            if "leak" in given:
                raise ValueError("give either leak (per-step factor) or tau (steps), not both")
            if not float(tau) > 0:
                raise ValueError(f"tau must be > 0 (steps), got {tau!r}")
            given["leak"] = math.exp(-1.0 / float(tau))
        super().__init__(**kwargs)
        args = {**self.DEFAULTS, **given}
        if "threshold" in args:
            args["threshold"] = float(args["threshold"])
        self.params = NeuronParams(**args)
        self.jit_compile = jit_compile
        self.learn_threshold = bool(learn_threshold)
        self.learn_leak = bool(learn_leak)
        self.per_channel = bool(per_channel)
        if self.learn_leak and not self.params.leak_in_grad:
            raise ValueError("learn_leak=True needs leak_in_grad=True (the identity leak of the "
                             "gradient gives the leak no gradient)")
        self.leak_weight = None

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        if self.per_channel and input_shape[-1] is None:
            raise ValueError(f"{self.name}: per_channel=True needs a known last axis, got "
                             f"{input_shape}")
        shape = (input_shape[-1],) if self.per_channel else ()
        self.theta = self.add_weight(
            name="threshold", shape=shape, trainable=self.learn_threshold,
            initializer=exact_constant(self.threshold_init))
        if self.learn_leak or self.per_channel:
            self.leak_weight = self.add_weight(
                name="leak", shape=shape, trainable=self.learn_leak, constraint=UnitInterval(),
                initializer=exact_constant(self.params.leak))
        self._build_state(input_shape)

    def _general(self):
        return (self.stateful or self.return_trace or self.return_state or self.learn_threshold
                or self.leak_weight is not None)

    def _run(self, current, state, return_trace):
        extra = {} if self.leak_weight is None else {"leak": self.leak_weight}
        out = spike_sequence(current, self.params, threshold=self.theta,
                             initial_state=None if state is None else state[0],
                             return_trace=return_trace, return_state=True,
                             param_gradients=self.learn_threshold or self.learn_leak,
                             jit_compile=self.jit_compile, **extra)
        return out[0], (out[1] if return_trace else None), (out[-1],)

    def call(self, current, initial_state=None, return_membrane=False):
        if initial_state is None and not self._general():  # the first release's op, unchanged
            return spike_sequence(current, self.params, threshold=self.theta,
                                  return_membrane=return_membrane, jit_compile=self.jit_compile)
        if return_membrane:
            raise ValueError(f"{self.name}: return_membrane is the legacy output; with state, "
                             "recording or learnable options use return_state=True")
        return super().call(current, initial_state)

    def get_config(self):
        learn = {k: True for k in self.LEARN_OPTIONS if getattr(self, k)}
        return {**super().get_config(), **self.params.get_config(),
                "jit_compile": self.jit_compile, **learn, **self._output_config()}


@keras.saving.register_keras_serializable(package="tfsnn")
class IF(LIF):
    """Integrate-and-fire (``LIF`` with ``leak = 1``)."""

    def __init__(self, threshold=None, **kwargs):
        leak = kwargs.get("leak", 1.0)
        if float(leak) != 1.0:
            raise ValueError(f"IF has no leak (leak=1), got leak={leak!r}; use LIF")
        super().__init__(threshold, **kwargs)


@keras.saving.register_keras_serializable(package="tfsnn")
class RathiNeuron(LIF):
    """Rathi et al. (hybrid + STDB) neuron: fire from ``V(t-1)``, soft reset, STDB surrogate.

    Defaults: ``leak=1`` (IF), ``surrogate=STDB(alpha=0.3, beta=0.01)``, ``t_last0=-999``.
    """

    DEFAULTS = {"surrogate": "stdb", "fire_before_integrate": True}


@keras.saving.register_keras_serializable(package="tfsnn")
class LeeNeuron(LIF):
    """Lee et al. (spike-based BP) neuron: integrate first, reset to zero, ``leak=0.99``,
    spike-gated surrogate ``1[U > theta]/theta``, identity leak in the gradient, NG correction."""

    DEFAULTS = {"leak": 0.99, "reset": "zero", "surrogate": "lee", "leak_in_grad": False,
                "ng_correction": True}


def use_xla_loops(model):
    """XLA-compile the time loops of every ``LIF``-family layer of ``model`` at any T (layers
    whose ``jit_compile`` is None, the automatic choice that starts at ``JIT_MIN_STEPS``; an
    explicit True / False is kept). For training: measured faster than graph loops for LeNet
    and VGG5 (``bench/train_throughput.py``; RathiNeuron alone at VGG5's map sizes, T = 20:
    0.47-0.58x the graph loops' time). Returns ``model``."""
    for layer in model.layers:
        if isinstance(layer, LIF) and layer.jit_compile is None:
            layer.jit_compile = True
    return model

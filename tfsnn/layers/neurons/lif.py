"""Spiking neuron layers trained with surrogate gradients (docs/specs/hybrid_and_spike_bp.md §2-§4).

Tensors are ``[batch, time, ...]``. A neuron layer maps an input-current sequence ``I`` to a
spike sequence ``o`` (same shape, values 0/1 in ``I``'s dtype). The whole recursion over time is
**one** ``tf.custom_gradient`` op (``spike_sequence``) whose forward is a ``tf.while_loop`` and
whose backward is the hand-written recursion of docs/specs/hybrid_and_spike_bp.md §2.7 / §3.5, so the tape stores only the
output spikes plus one auxiliary ``[T, batch, ...]`` tensor, the one the surrogate declares in
``Surrogate.needs``: the pre-spike membrane (``"membrane"``), the spike age (``"spike_age"``,
STDB), or nothing (``"spike"``, Lee's spike-gated surrogate).

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

RESETS = ("subtract", "zero")
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
    ``replace(**changes)`` returns a validated copy.
    """

    threshold: object = 1.0
    leak: float = 1.0
    reset: str = "subtract"
    surrogate: object = "linear"
    fire_before_integrate: bool = False
    leak_in_grad: bool = True
    ng_correction: bool = False
    t_last0: float = -999.0

    def __post_init__(self):
        th = self.threshold
        if isinstance(th, (int, float)) and not th > 0:
            raise ValueError(f"threshold must be > 0, got {th!r}")
        if not 0.0 < float(self.leak) <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {self.leak!r}")
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {self.reset!r}")
        normalised = dict(leak=float(self.leak), surrogate=sg.get(self.surrogate),
                          fire_before_integrate=bool(self.fire_before_integrate),
                          leak_in_grad=bool(self.leak_in_grad),
                          ng_correction=bool(self.ng_correction), t_last0=float(self.t_last0))
        if normalised["surrogate"].needs not in sg.NEEDS:
            raise ValueError(f"surrogate {self.surrogate!r}: needs must be one of {sg.NEEDS}")
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes):
        """A validated copy with ``changes`` (field names of this class)."""
        return dataclasses.replace(self, **changes)

    def get_config(self):
        """The fields as a dict (surrogate serialized); ``NeuronParams(**config)`` rebuilds it."""
        cfg = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**cfg, "surrogate": sg.serialize(self.surrogate)}

    @property
    def leak_grad(self):
        """The leak of the backward recursion: ``leak`` if ``leak_in_grad`` else 1."""
        return self.leak if self.leak_in_grad else 1.0


PARAM_NAMES = tuple(f.name for f in dataclasses.fields(NeuronParams))


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


def _forward_loop(i_tm, theta, params):
    """The neuron recursion over time as one ``tf.while_loop`` (time-major).

    ``i_tm``: input current ``[T, B, ...]``; ``theta``: scalar threshold in ``i_tm``'s dtype.
    Returns ``(o_tm, saved, v_end)``: spikes ``[T, B, ...]``; what ``params.surrogate.needs``
    asks the backward pass to keep, ``[T, B, ...]`` (``"membrane"``: the pre-spike membrane
    ``U(t)``, from which the spikes are recomputed; ``"spike_age"``: ``t - t_last``) or ``[0]``
    (``"spike"``: the spikes suffice); the final state ``R(T-1)`` / ``V(T-1)`` ``[B, ...]``.
    """
    dtype = i_tm.dtype
    lam = params.leak
    delayed = params.fire_before_integrate
    zero_reset = params.reset == "zero"
    needs = params.surrogate.needs
    n = tf.shape(i_tm)[0]
    i_ta = tf.TensorArray(dtype, size=n).unstack(i_tm)
    # "membrane": the spikes are recomputed from the saved membrane (one write per step)
    o_ta = tf.TensorArray(dtype, size=n) if needs != "membrane" else 0
    a_ta = tf.TensorArray(dtype, size=n) if needs != "spike" else None
    zeros = tf.zeros_like(i_tm[0])
    t_last = zeros + tf.cast(params.t_last0, dtype)

    def body(t, v, t_last, o_ta, a_ta):
        it = i_ta.read(t)
        u = v if delayed else (v if lam == 1.0 else lam * v) + it
        fired = u > theta
        o = tf.cast(fired, dtype)
        if needs == "membrane":
            a_ta = a_ta.write(t, u)
        elif needs == "spike_age":
            tf_ = tf.cast(t, dtype)
            a_ta = a_ta.write(t, tf_ - t_last)
            t_last = tf.where(fired, tf_, t_last)
        if delayed:
            lu = u if lam == 1.0 else lam * u
            v = (tf.where(fired, zeros, lu) if zero_reset else lu - theta * o) + it
        else:
            v = tf.where(fired, zeros, u) if zero_reset else u - theta * o
        return t + 1, v, t_last, o_ta.write(t, o) if needs != "membrane" else o_ta, a_ta

    loop_vars = (tf.constant(0), zeros, t_last, o_ta, a_ta if a_ta is not None else 0)
    _, v_end, _, o_ta, a_ta = tf.while_loop(
        lambda t, *_: t < n, body, loop_vars, maximum_iterations=n)
    saved = a_ta.stack() if needs != "spike" else tf.zeros([0], dtype)
    o_tm = tf.cast(saved > theta, dtype) if needs == "membrane" else o_ta.stack()
    return o_tm, saved, v_end


def _surrogate_step(surrogate, saved, o_tm, theta):
    """``sigma(t) = do/dz`` ``[T, B, ...]`` from ``saved``, what ``surrogate.needs`` had kept."""
    needs = surrogate.needs
    if needs == "membrane":
        return surrogate.grad(saved / theta - 1.0, o_tm)
    if needs == "spike_age":
        return surrogate.grad(tf.zeros_like(saved), o_tm, saved)  # independent of z
    return surrogate.grad(o_tm - 0.5, o_tm)  # "spike"; z: a stand-in with the spike's sign


def _backward_recursion(g_tm, sigma, o_tm, theta, params):
    """``dL/dI`` ``[T, B, ...]`` from ``g_tm`` (``dL/do``, times NG if on) and ``sigma``.

    ``c(t) = g(t) * sigma(t) / theta + k(t) * c(t+1)``, ``k(t) = lam_g * (1 or 1 - o(t))``
    (module docstring); all tensors ``[T, B, ...]``. With the one-step delay
    ``dL/dI(t) = c(t+1)``, ``dL/dI(T-1) = 0``.
    """
    e = g_tm * sigma / theta
    lam_g = params.leak_grad
    k = (lam_g * (1.0 - o_tm)) if params.reset == "zero" else lam_g
    c = _reverse_recursion(e, k)
    if params.fire_before_integrate:
        c = tf.concat([c[1:], tf.zeros_like(c[:1])], axis=0)
    return c


def _auto_jit(jit_compile, steps):
    """``jit_compile`` resolved (None: XLA when tracing a graph of >= ``JIT_MIN_STEPS`` steps)."""
    if jit_compile is not None:
        return bool(jit_compile)
    return JIT_AUTO and not tf.executing_eagerly() and steps is not None and steps >= JIT_MIN_STEPS


def spike_sequence(current, params=None, *, return_membrane=False, jit_compile=None,
                   **param_changes):
    """Spikes ``[B, T, ...]`` of an IF/LIF population driven by ``current`` ``[B, T, ...]``.

    One custom-gradient op (module docstring): ``_forward_loop`` forward; ``_surrogate_step`` and
    ``_backward_recursion`` backward. ``params``: a ``NeuronParams`` (default ``NeuronParams()``);
    keyword ``param_changes`` (its field names, e.g. ``threshold=layer.theta``) build or amend it.
    ``return_membrane``: also return the final state ``R(T-1)`` / ``V(T-1)`` ``[B, ...]`` (no
    gradient through it). ``jit_compile``: run the forward loop and the backward recursion as
    XLA-compiled functions (None: when tracing a graph whose static T is at least
    ``JIT_MIN_STEPS``; never eagerly).
    """
    if params is None:
        params = NeuronParams(**param_changes)
    elif not isinstance(params, NeuronParams):
        raise TypeError(f"params must be a NeuronParams, got {params!r}; pass the neuron's "
                        "settings as keywords (threshold=..., leak=..., ...)")
    elif param_changes:
        params = params.replace(**param_changes)
    x = tf.convert_to_tensor(current)
    if not x.dtype.is_floating:
        raise TypeError(f"current must be a float tensor, got {x.dtype}")
    if x.shape.rank is not None and x.shape.rank < 2:
        raise ValueError(f"current must be [batch, time, ...], got shape {x.shape}")
    dtype = x.dtype
    threshold = params.threshold
    theta = (tf.constant(float(threshold), dtype) if isinstance(threshold, (int, float))
             else tf.cast(threshold, dtype))  # cast of a Python float would round via float32
    theta = tf.stop_gradient(theta)
    perm = [1, 0] + list(range(2, x.shape.rank))  # [B, T, ...] <-> [T, B, ...]

    def forward(x_btn, theta):
        o_tm, saved, v_end = _forward_loop(tf.transpose(x_btn, perm), theta, params)
        ng = (_lee_ng_time_major(o_tm, params.leak) if params.ng_correction
              else tf.zeros([0], dtype))
        return tf.transpose(o_tm, perm), o_tm, saved, ng, v_end

    def backward(d_spikes, o_tm, saved, ng, theta):
        g_tm = tf.transpose(d_spikes, perm)
        if params.ng_correction:  # Lee's gain on dL/do (ops in this order: bit-identical grads)
            g_tm = g_tm * ng
        sigma = _surrogate_step(params.surrogate, saved, o_tm, theta)
        return tf.transpose(_backward_recursion(g_tm, sigma, o_tm, theta, params), perm)

    if _auto_jit(jit_compile, x.shape[1]):
        forward = tf.function(forward, jit_compile=True)
        backward = tf.function(backward, jit_compile=True)

    @tf.custom_gradient
    def op(x_btn):
        # stop_gradient: the tape must not differentiate the (XLA) function itself; it would
        # try to export the loop's TensorLists. The gradient is ``grad`` below.
        spikes, o_tm, saved, ng, v_end = forward(tf.stop_gradient(x_btn), theta)

        def grad(d_spikes, *unused):
            return backward(tf.stop_gradient(d_spikes), o_tm, saved, ng, theta)

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
class LIF(keras.layers.Layer):
    """Leaky integrate-and-fire population: input currents ``[B, T, ...]`` -> spikes ``[B, T, ...]``.

    Arguments: ``threshold`` (positional or keyword) and the other ``NeuronParams`` fields as
    keywords (``leak``, ``reset``, ``surrogate``, ``fire_before_integrate``, ``leak_in_grad``,
    ``ng_correction``, ``t_last0``); unset ones take the class's ``DEFAULTS``, then
    ``NeuronParams``' defaults. ``threshold`` is the initial value of the non-trainable scalar
    weight ``theta`` (saved with the model; threshold balancing writes it). ``jit_compile``: XLA
    for the op's loops (None: automatic, see ``spike_sequence``). ``params`` holds the settings;
    ``leak``, ``reset``, ... (and ``threshold_init``) read and replace it. Gradient: one custom
    op, see ``spike_sequence``.
    """

    DEFAULTS = {}  # NeuronParams fields whose default a subclass changes

    threshold_init = _param_property("threshold", "Initial value of ``theta`` (float).")
    leak = _param_property("leak", "Per-step membrane factor in (0, 1].")
    reset = _param_property("reset", '``"subtract"`` or ``"zero"``.')
    surrogate = _param_property("surrogate", "The ``tfsnn.surrogates.Surrogate``.")
    fire_before_integrate = _param_property("fire_before_integrate", "Rathi's one-step delay.")
    leak_in_grad = _param_property("leak_in_grad", "False: identity leak in the gradient.")
    ng_correction = _param_property("ng_correction", "Lee's leak-aware gain NG.")
    t_last0 = _param_property("t_last0", "Spike time assumed before t = 0 (steps).")

    def __init__(self, threshold=None, *, jit_compile=None, **kwargs):
        given = {k: kwargs.pop(k) for k in PARAM_NAMES if k in kwargs}
        if threshold is not None:
            given["threshold"] = threshold
        super().__init__(**kwargs)
        args = {**self.DEFAULTS, **given}
        if "threshold" in args:
            args["threshold"] = float(args["threshold"])
        self.params = NeuronParams(**args)
        self.jit_compile = jit_compile

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self.name}: input must be [batch, time, ...], got {input_shape}")
        self.theta = self.add_weight(
            name="threshold", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self.threshold_init))

    def call(self, current, return_membrane=False):
        return spike_sequence(current, self.params, threshold=self.theta,
                              return_membrane=return_membrane, jit_compile=self.jit_compile)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.params.get_config(),
                "jit_compile": self.jit_compile}


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

"""Plumbing shared by the fused multi-state neurons (``adaptive``, ``current``, ``recurrent``).

``fused_op(forward, backward, inputs, steps, jit_compile)`` wraps a hand-written forward
(``inputs -> (outputs, saved)``) and backward (``(output grads, saved, inputs) -> input grads``)
into one ``tf.custom_gradient`` op, XLA-compiled like ``lif.spike_sequence`` (``jit_compile``
None: when tracing a graph of at least ``lif.JIT_MIN_STEPS`` static steps). ``time_loop`` and
``reverse_loop`` are the two ``tf.while_loop``s every such neuron needs.
"""
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import lif
from tfsnn.layers.neurons.base import NeuronLayer, decay_factor, exact_constant


def surrogate_sigma(surrogate, z, o):
    """``do/dz`` from the normalised membrane ``z`` and the spikes ``o``."""
    if surrogate.needs == "spike_age":
        raise ValueError(f"surrogate {surrogate.name!r} needs the spike age; this neuron takes "
                         "membrane- or spike-based surrogates")
    return surrogate.grad(z if surrogate.needs == "membrane" else o - 0.5, o)


def check_surrogate(surrogate):
    if surrogate.needs == "spike_age":
        raise ValueError(f"surrogate {surrogate.name!r} needs the spike age; use a membrane- or "
                         "spike-based surrogate (linear, atan, fast_sigmoid, gaussian, lee)")
    return surrogate


def time_loop(step, xs, carry, n_out, reverse=False):
    """``carry, outs = step(t, x_t, carry)`` over axis 0 of every tensor in ``xs`` (from
    ``t = T-1`` down to 0 when ``reverse``; outputs stored at their own ``t``); returns
    ``(final carry, tuple of n_out stacked outputs [T, ...])``."""
    n = tf.shape(xs[0])[0]
    x_tas = [tf.TensorArray(x.dtype, size=n).unstack(x) for x in xs]
    o_tas = tuple(tf.TensorArray(xs[0].dtype, size=n) for _ in range(n_out))

    def body(i, carry, o_tas):
        t = n - 1 - i if reverse else i
        carry, outs = step(t, [ta.read(t) for ta in x_tas], carry)
        return i + 1, carry, tuple(ta.write(t, o) for ta, o in zip(o_tas, outs))

    _, carry, o_tas = tf.while_loop(lambda t, *_: t < n, body, (tf.constant(0), carry, o_tas),
                                    maximum_iterations=n)
    return carry, tuple(ta.stack() for ta in o_tas)


def reverse_loop(step, xs, carry, n_out):
    """``time_loop`` from ``t = T-1`` down to 0 (outputs stored at their own ``t``)."""
    return time_loop(step, xs, carry, n_out, reverse=True)


def fused_op(forward, backward, inputs, steps, jit_compile):
    """One custom-gradient op: ``forward(*inputs) -> (outputs, saved)`` (tuples of tensors),
    ``backward(output_grads, saved, inputs) -> input_grads`` (one per input)."""
    if lif._auto_jit(jit_compile, steps):
        forward, backward = lif._xla(forward), lif._xla(backward)  # no AutoGraph (see _xla)

    @tf.custom_gradient
    def op(*args):
        sd = tf.stop_gradient
        outputs, saved = forward(*[sd(a) for a in args])

        def grad(*dys):
            dys = tuple(tf.zeros_like(o) if d is None else sd(d) for d, o in zip(dys, outputs))
            return list(backward(dys, saved, tuple(sd(a) for a in args)))

        return tuple(outputs), grad

    return op(*inputs)


def dynamics(value, dtype, learn):
    """A neuron constant (threshold, leak, decay) as a tensor of ``dtype``: a Python number
    converted exactly, or a tensor / variable (scalar or broadcastable to a frame, e.g. per
    channel ``[C]``) cast; without ``learn`` it receives no gradient."""
    t = (tf.constant(float(value), dtype) if isinstance(value, (int, float))
         else tf.cast(value, dtype))
    return t if learn else tf.stop_gradient(t)


def reset_terms(reset, detach_reset, o, u, thr):
    """``(d, r)`` of ``S = reset(U, o)`` with threshold ``thr``: ``d = dS/dU`` at fixed ``o``
    (1.0 or ``1 - o``), ``r = dS/do`` (``-thr`` | ``-U`` | 0; 0 when ``detach_reset``); Python
    floats where constant."""
    d = 1.0 - o if reset == "zero" else 1.0
    if detach_reset or reset == "none":
        return d, 0.0
    return d, (-thr if reset == "subtract" else -u)


def apply_reset(reset, u, thr, o, fired):
    """``S`` after the reset: ``U - thr*o`` | ``U`` where not fired, else 0 | ``U``."""
    if reset == "subtract":
        return u - thr * o
    return tf.where(fired, tf.zeros_like(u), u) if reset == "zero" else u


def reset_of(reset, allowed=("subtract", "zero", "none")):
    if reset not in allowed:
        raise ValueError(f"reset must be one of {allowed}, got {reset!r}")
    return reset


class FusedNeuronLayer(NeuronLayer):
    """Common arguments of the fused multi-state neurons: ``threshold`` (initial value of the
    weight ``theta``), ``leak`` or ``tau`` (membrane, per step / steps), ``reset``
    (``"subtract"``, ``"zero"``, ``"none"``), ``detach_reset`` (False: the reset carries the
    surrogate gradient), ``surrogate`` (name, instance or config; not spike-age based),
    ``jit_compile``, and the ``NeuronLayer`` options (state, recording, streaming).

    Learnable dynamics, as ``LIF``: ``learn_threshold`` makes ``theta`` trainable;
    ``learn_leak`` makes the leak (weight ``leak``) and the neuron's other decays
    (``decay_names``; weights ``adapt_decay``, ``current_decay``) trainable, clipped to
    ``[0, 1]``; ``per_channel`` gives each one value per channel (last axis, ``[C]``).
    Gradients come from the fused op. ``FLOATS``: the subclass's extra float settings,
    ``(name, tau_name or None, default)``; those with a ``tau_name`` are decays."""

    FLOATS = ()
    RESETS = ("subtract", "zero", "none")
    LEARN_OPTIONS = ("learn_threshold", "learn_leak", "per_channel")

    def __init__(self, threshold=1.0, *, leak=None, tau=None, reset="subtract",
                 surrogate="linear", detach_reset=True, learn_threshold=False, learn_leak=False,
                 per_channel=False, jit_compile=None, **kwargs):
        extra = {}
        for name, tau_name, default in self.FLOATS:
            value = kwargs.pop(name, None)
            t = kwargs.pop(tau_name, None) if tau_name else None
            extra[name] = (decay_factor(name, value, tau_name, t, default) if tau_name
                           else float(default if value is None else value))
        super().__init__(**kwargs)
        if not float(threshold) > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        self.threshold_init = float(threshold)
        self.leak = decay_factor("leak", leak, "tau", tau, 1.0)
        self.reset = reset_of(reset, self.RESETS)
        self.surrogate = check_surrogate(sg.get(surrogate))
        self.detach_reset = bool(detach_reset)
        self.learn_threshold = bool(learn_threshold)
        self.learn_leak = bool(learn_leak)
        self.per_channel = bool(per_channel)
        self.jit_compile = jit_compile
        self.decay_weights = {}
        for name, value in extra.items():
            setattr(self, name, value)

    @property
    def decay_names(self):
        return ("leak",) + tuple(name for name, tau_name, _ in self.FLOATS if tau_name)

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        if self.per_channel and input_shape[-1] is None:
            raise ValueError(f"{self.name}: per_channel=True needs a known last axis, got "
                             f"{input_shape}")
        shape = (input_shape[-1],) if self.per_channel else ()
        self.theta = self.add_weight(name="threshold", shape=shape,
                                     trainable=self.learn_threshold,
                                     initializer=exact_constant(self.threshold_init))
        if self.learn_leak or self.per_channel:
            self.decay_weights = {
                name: self.add_weight(name=name, shape=shape, trainable=self.learn_leak,
                                      constraint=lif.UnitInterval(),
                                      initializer=exact_constant(getattr(self, name)))
                for name in self.decay_names}
        self._build_state(input_shape)

    def _dynamics(self):
        """Keyword arguments of the op: threshold, decays (weights or floats), reset options."""
        decays = {n: self.decay_weights.get(n, getattr(self, n)) for n in self.decay_names}
        return {"threshold": self.theta, **decays, "reset": self.reset,
                "surrogate": self.surrogate, "detach_reset": self.detach_reset,
                "param_gradients": self.learn_threshold or self.learn_leak,
                "jit_compile": self.jit_compile}

    def _frame_zeros(self, current):
        return tf.zeros_like(current[:, 0])

    def _states(self, current, state):
        if state is None:
            return tuple(self._frame_zeros(current) for _ in self.STATE_NAMES)
        return tuple(s + self._frame_zeros(current) for s in state)

    def get_config(self):
        optional = {k: True for k in self.LEARN_OPTIONS if getattr(self, k)}
        if not self.detach_reset:
            optional["detach_reset"] = False
        return {**super().get_config(), "threshold": self.threshold_init, "leak": self.leak,
                "reset": self.reset, "surrogate": sg.serialize(self.surrogate),
                "jit_compile": self.jit_compile,
                **{name: getattr(self, name) for name, _, _ in self.FLOATS},
                **optional, **self._output_config()}

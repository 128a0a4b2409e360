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


def time_loop(step, xs, carry, n_out):
    """``carry, outs = step(t, x_t, carry)`` over axis 0 of every tensor in ``xs``; returns
    ``(final carry, tuple of n_out stacked outputs [T, ...])``."""
    n = tf.shape(xs[0])[0]
    x_tas = [tf.TensorArray(x.dtype, size=n).unstack(x) for x in xs]
    o_tas = tuple(tf.TensorArray(xs[0].dtype, size=n) for _ in range(n_out))

    def body(t, carry, o_tas):
        carry, outs = step(t, [ta.read(t) for ta in x_tas], carry)
        return t + 1, carry, tuple(ta.write(t, o) for ta, o in zip(o_tas, outs))

    _, carry, o_tas = tf.while_loop(lambda t, *_: t < n, body, (tf.constant(0), carry, o_tas),
                                    maximum_iterations=n)
    return carry, tuple(ta.stack() for ta in o_tas)


def reverse_loop(step, xs, carry, n_out):
    """``time_loop`` from ``t = T-1`` down to 0 (outputs stored at their own ``t``)."""
    n = tf.shape(xs[0])[0]

    def rev(i, x_t, carry):
        return step(n - 1 - i, x_t, carry)

    rev_xs = [tf.reverse(x, [0]) for x in xs]
    carry, outs = time_loop(rev, rev_xs, carry, n_out)
    return carry, tuple(tf.reverse(o, [0]) for o in outs)


def fused_op(forward, backward, inputs, steps, jit_compile):
    """One custom-gradient op: ``forward(*inputs) -> (outputs, saved)`` (tuples of tensors),
    ``backward(output_grads, saved, inputs) -> input_grads`` (one per input)."""
    if lif._auto_jit(jit_compile, steps):
        forward = tf.function(forward, jit_compile=True)
        backward = tf.function(backward, jit_compile=True)

    @tf.custom_gradient
    def op(*args):
        sd = tf.stop_gradient
        outputs, saved = forward(*[sd(a) for a in args])

        def grad(*dys):
            dys = tuple(tf.zeros_like(o) if d is None else sd(d) for d, o in zip(dys, outputs))
            return list(backward(dys, saved, tuple(sd(a) for a in args)))

        return tuple(outputs), grad

    return op(*inputs)


def reset_of(reset, allowed=("subtract", "zero")):
    if reset not in allowed:
        raise ValueError(f"reset must be one of {allowed}, got {reset!r}")
    return reset


class FusedNeuronLayer(NeuronLayer):
    """Common arguments of the fused multi-state neurons: ``threshold`` (initial value of the
    non-trainable weight ``theta``), ``leak`` or ``tau`` (membrane, per step / steps),
    ``reset``, ``surrogate`` (name, instance or config; not spike-age based), ``jit_compile``,
    and the ``NeuronLayer`` options (state, recording, streaming). ``FLOATS``: the subclass's
    extra float settings, ``(name, tau_name or None, default)``."""

    FLOATS = ()
    RESETS = ("subtract", "zero")

    def __init__(self, threshold=1.0, *, leak=None, tau=None, reset="subtract",
                 surrogate="linear", jit_compile=None, **kwargs):
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
        self.jit_compile = jit_compile
        for name, value in extra.items():
            setattr(self, name, value)

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        self.theta = self.add_weight(name="threshold", shape=(), trainable=False,
                                     initializer=exact_constant(self.threshold_init))
        self._build_state(input_shape)

    def _frame_zeros(self, current):
        return tf.zeros_like(current[:, 0])

    def _states(self, current, state):
        if state is None:
            return tuple(self._frame_zeros(current) for _ in self.STATE_NAMES)
        return tuple(s + self._frame_zeros(current) for s in state)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold_init, "leak": self.leak,
                "reset": self.reset, "surrogate": sg.serialize(self.surrogate),
                "jit_compile": self.jit_compile,
                **{name: getattr(self, name) for name, _, _ in self.FLOATS},
                **self._output_config()}

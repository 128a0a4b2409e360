"""What every surrogate-gradient neuron layer shares: initial / final state, streaming, recording.

A neuron layer maps ``[B, T, ...]`` currents to ``[B, T, ...]`` spikes with one fused op; a
subclass implements ``_run(current, state, return_trace) -> (spikes, trace, final_state)`` where
``state`` / ``final_state`` are tuples of ``[B, ...]`` tensors named by ``STATE_NAMES`` (``None``:
zeros) and ``trace`` the membrane ``[B, T, ...]`` (or None). This base class adds:

* ``call(current, initial_state=None)``: ``initial_state`` a tensor (one state component) or a
  tuple; gradients flow into it and out of the returned final state (truncated BPTT).
* ``return_trace`` / ``return_state`` (constructor): the layer returns ``(spikes[, trace]
  [, state])``; the trace comes out of the same fused op (no second pass).
* ``stateful=True``: the state lives in non-trainable weights ``state_<name>`` of shape
  ``[B, ...]`` (fixed batch size, e.g. ``keras.Input(shape, batch_size=B)``), is read when no
  ``initial_state`` is given and written after each call; ``reset_states()`` zeroes it. A stream
  cut into chunks then gives exactly the spikes of one call on the whole sequence.
* ``step(x_t, state=None) -> (spikes_t, state)``: one time step on ``[B, ...]`` (``T = 1``).
"""
import math

import keras
import tensorflow as tf

OUTPUT_OPTIONS = ("return_trace", "return_state", "stateful")


class NeuronLayer(keras.layers.Layer):
    """Base of the fused neuron layers (module docstring)."""

    STATE_NAMES = ("membrane",)

    def __init__(self, *, return_trace=False, return_state=False, stateful=False, **kwargs):
        super().__init__(**kwargs)
        self.return_trace = bool(return_trace)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.state_vars = None

    # ------------------------------------------------------------------ subclass interface
    def _run(self, current, state, return_trace):
        raise NotImplementedError

    def _check_input_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self.name}: input must be [batch, time, ...], got {input_shape}")

    # ------------------------------------------------------------------ state
    def _build_state(self, input_shape):
        if not self.stateful:
            return
        if input_shape[0] is None or any(d is None for d in input_shape[2:]):
            raise ValueError(
                f"{self.name}: stateful=True needs a fixed batch size and frame shape, got input "
                f"shape {tuple(input_shape)}; use keras.Input(shape, batch_size=B)")
        shape = (input_shape[0],) + tuple(input_shape[2:])
        self.state_vars = tuple(
            self.add_weight(name=f"state_{n}", shape=shape, trainable=False,
                            initializer="zeros") for n in self.STATE_NAMES)

    def reset_states(self):
        """Zero the state of a ``stateful`` layer."""
        if not self.stateful:
            raise ValueError(f"{self.name}: reset_states() needs stateful=True")
        for v in self.state_vars or ():
            v.assign(tf.zeros_like(v))

    def _as_tuple(self, state):
        if state is None:
            return None
        state = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        if len(state) != len(self.STATE_NAMES):
            raise ValueError(f"{self.name}: initial_state must have {len(self.STATE_NAMES)} "
                             f"component(s) {self.STATE_NAMES}, got {len(state)}")
        return tuple(tf.cast(s, self.compute_dtype) for s in state)

    def _pack(self, state):
        return state[0] if len(state) == 1 else tuple(state)

    # ------------------------------------------------------------------ calls
    def call(self, current, initial_state=None):
        state = self._as_tuple(initial_state)
        if state is None and self.stateful:
            state = tuple(v.value for v in self.state_vars)
        spikes, trace, final = self._run(current, state, self.return_trace)
        if self.stateful:
            for v, s in zip(self.state_vars, final):
                v.assign(tf.stop_gradient(s))
        out = (spikes,) + ((trace,) if self.return_trace else ())
        out += (self._pack(final),) if self.return_state else ()
        return out[0] if len(out) == 1 else out

    def step(self, x_t, state=None):
        """One time step: ``x_t`` ``[B, ...]`` -> ``(spikes_t [B, ...], state)``.

        ``state``: tensor / tuple (default: the stored state if ``stateful``, else zeros); the
        stored state of a stateful layer is advanced when ``state`` is None.
        """
        x_t = tf.cast(tf.convert_to_tensor(x_t), self.compute_dtype)
        if not self.built:
            self.build((x_t.shape[0], 1) + tuple(x_t.shape[1:]))
        given = self._as_tuple(state)
        use_vars = given is None and self.stateful
        if use_vars:
            given = tuple(v.value for v in self.state_vars)
        spikes, _, final = self._run(x_t[:, None], given, False)
        if use_vars:
            for v, s in zip(self.state_vars, final):
                v.assign(tf.stop_gradient(s))
        return spikes[:, 0], self._pack(final)

    def compute_output_shape(self, input_shape):
        out = (tuple(input_shape),)
        if self.return_trace:
            out += (tuple(input_shape),)
        if self.return_state:
            frame = (input_shape[0],) + tuple(input_shape[2:])
            out += (frame,) if len(self.STATE_NAMES) == 1 else (tuple(
                frame for _ in self.STATE_NAMES),)
        return out[0] if len(out) == 1 else out

    def _output_config(self):
        """The output options, only those not at their default (older configs unchanged)."""
        return {k: True for k in OUTPUT_OPTIONS if getattr(self, k)}


def decay_factor(name, value, tau_name, tau, default):
    """A per-step decay in (0, 1] from ``value`` or from the time constant ``tau`` (steps):
    ``exp(-1/tau)``; errors name the arguments."""
    if tau is not None:
        if value is not None:
            raise ValueError(f"give either {name} (per-step factor) or {tau_name} (steps), "
                             "not both")
        if not float(tau) > 0:
            raise ValueError(f"{tau_name} must be > 0 (steps), got {tau!r}")
        return math.exp(-1.0 / float(tau))
    value = default if value is None else float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return value


def exact_constant(value):
    """An initializer filling ``value`` converted straight to the weight's dtype
    (``keras.initializers.Constant`` rounds through float32, which float64 layers must not)."""
    def init(shape, dtype=None):
        return tf.fill(shape, tf.constant(float(value), dtype or "float32"))
    return init

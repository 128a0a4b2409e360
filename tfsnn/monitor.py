"""Probes: record chosen layers' spikes and membrane traces while a model runs, without
rebuilding it (``tfsnn.accounting`` is the unrelated spike / SOP counting module).

    with tfsnn.monitor.Probe(model, ["lif1", "lif2"], record=("spikes", "membrane")) as probe:
        model.predict(x, batch_size=32)
    probe.records["lif1"]["membrane"]   # numpy [N, T, ...], batches concatenated in call order

Inside the ``with`` block each chosen layer's ``call`` is wrapped: its output (the spikes) is
recorded, and for ``tfsnn.layers.neurons.base.NeuronLayer``s ``"membrane"`` switches
``return_trace`` on for the call (the trace of the same fused op; the layer's own outputs are
unchanged). Records leave the graph through ``tf.py_function``, so ``predict`` / ``simulate``
functions are retraced on entry and exit and ``model.jit_compile`` is off meanwhile. In
``tfsnn.simulate`` the integer layers run through their ``compact`` method; that is wrapped
instead (spikes only).
"""
import numpy as np
import tensorflow as tf

from tfsnn.layers.neurons.base import NeuronLayer

RECORDABLE = ("spikes", "membrane")


class Probe:
    """Context manager recording ``layers`` (names or layer objects of ``model``).

    ``record``: subset of ``RECORDABLE``; ``"membrane"`` needs ``NeuronLayer``s. After the block,
    ``records[name][kind]`` is a numpy array (batches concatenated along axis 0) and
    ``calls[name]`` the number of recorded calls.
    """

    def __init__(self, model, layers, record=("spikes",)):
        record = (record,) if isinstance(record, str) else tuple(record)
        bad = [r for r in record if r not in RECORDABLE]
        if bad or not record:
            raise ValueError(f"record must be a non-empty subset of {RECORDABLE}, got {record!r}")
        self.model = model
        self.record = record
        self.layers = [model.get_layer(l) if isinstance(l, str) else l for l in layers]
        if "membrane" in record:
            no_trace = [l.name for l in self.layers if not isinstance(l, NeuronLayer)]
            if no_trace:
                raise ValueError(f"record='membrane' needs tfsnn neuron layers (NeuronLayer); "
                                 f"these have no membrane trace: {no_trace}")
        self._chunks = {}
        self._saved = []

    # ------------------------------------------------------------------ recording
    def _store(self, name, kind, value):
        self._chunks.setdefault(name, {}).setdefault(kind, []).append(np.asarray(value))

    def _emit(self, name, values):
        if tf.executing_eagerly():
            for kind, v in values.items():
                self._store(name, kind, v.numpy())
            return
        kinds = list(values)

        def push(*arrays):
            for kind, a in zip(kinds, arrays):
                self._store(name, kind, a.numpy())
            return 0

        tf.py_function(push, [values[k] for k in kinds], tf.int32)

    def _wrap_call(self, layer):
        orig = layer.call
        trace_on = "membrane" in self.record and isinstance(layer, NeuronLayer)

        def call(*args, **kwargs):
            if not trace_on:
                out = orig(*args, **kwargs)
                spikes = out[0] if isinstance(out, (tuple, list)) else out
                self._emit(layer.name, {"spikes": spikes})
                return out
            had = layer.return_trace
            layer.return_trace = True
            try:
                out = orig(*args, **kwargs)
            finally:
                layer.return_trace = had
            values = {"membrane": out[1]}
            if "spikes" in self.record:
                values["spikes"] = out[0]
            self._emit(layer.name, values)
            rest = out[:1] + out[2:] if not had else out
            return rest[0] if len(rest) == 1 else rest

        return "call", orig, call

    def _wrap_compact(self, layer):
        orig = layer.compact

        def compact(*args, **kwargs):
            out = orig(*args, **kwargs)
            self._emit(layer.name, {"spikes": out})
            return out

        return "compact", orig, compact

    # ------------------------------------------------------------------ context
    def _retrace(self):
        for attr in ("predict_function", "test_function", "train_function"):
            if hasattr(self.model, attr):
                setattr(self.model, attr, None)
        from tfsnn import simulation  # the cached per-model simulate functions
        simulation._BATCH_FNS.pop(self.model, None)

    def __enter__(self):
        self._chunks = {}
        for layer in self.layers:
            use_compact = hasattr(layer, "compact") and not isinstance(layer, NeuronLayer)
            if use_compact and "membrane" in self.record:
                raise ValueError(f"{layer.name}: membranes are recorded for NeuronLayers only")
            attr, orig, wrapped = (self._wrap_compact if use_compact else self._wrap_call)(layer)
            self._saved.append((layer, attr, orig))
            setattr(layer, attr, wrapped)
        self._jit = getattr(self.model, "jit_compile", None)
        if self._jit:
            self.model.jit_compile = False
        self._retrace()
        return self

    def __exit__(self, *exc):
        for layer, attr, orig in self._saved:
            try:
                delattr(layer, attr)  # the instance attribute set on entry
            except AttributeError:
                setattr(layer, attr, orig)
        self._saved = []
        if self._jit:
            self.model.jit_compile = self._jit
        self._retrace()
        return False

    @property
    def calls(self):
        """Recorded calls per layer name."""
        return {n: len(next(iter(c.values()))) for n, c in self._chunks.items()}

    @property
    def records(self):
        """``{layer name: {kind: numpy array}}``, calls concatenated along axis 0."""
        return {n: {k: np.concatenate(v, axis=0) for k, v in c.items()}
                for n, c in self._chunks.items()}

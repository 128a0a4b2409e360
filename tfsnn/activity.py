"""Spikes and synaptic operations of directly trained SNNs (Keras models of ``tfsnn`` neuron
layers between ``TimeFolded`` / plain Conv2D, Dense and AveragePooling2D layers), counted on
evaluation data, as the per-layer rows of ``tfsnn.report`` (energy per device included).

Counting rules (exact fan-out, ``tfsnn.geometry``; the same definitions as
``tfsnn.accounting``):

* a **synaptic layer** (Conv2D, Dense, AveragePooling2D, possibly ``TimeFolded``) receives its
  input ``x`` ``[B, T, ...]``. If ``x`` is integer-valued (spikes, or sums of spikes after an
  ``Add``) it costs ``sum |x| x fan-out`` **SOPs** (an event of value v is |v| events); otherwise
  (analog input: a ``DirectEncoder``, the output of an average pooling) it costs
  ``count(x != 0) x fan-out`` **MACs** (``input_macs_per_image``), a multiply being needed.
  Fan-out: conv ``fanout(h, w) x filters``; average pooling ``fanout(h, w)`` (one synapse per
  window covering the input, per channel); dense ``units``. ``ann_macs_per_image`` is the same
  layer as an ANN on one frame.
* a **neuron layer** (``tfsnn.layers.neurons`` layers, and the encoders) emits
  ``sum |s|`` spikes; ``neurons`` = its output size per step; ``neuron_updates`` = neurons x T.

Rows are named after the synaptic layer; each carries the neurons / spikes of the first neuron
layer that follows it (before the next synaptic layer), as in the converted SNN where ``conv3``
names both the synapses and the neurons behind them. The encoder gets its own row; a synaptic
layer with no neuron layer after it has role ``output`` if it is the last (the output ``Dense``
feeding a readout), else ``synapses`` (no neurons of its own, e.g. an average pooling). An
analog encoder (``DirectEncoder``) emits no spikes (count 0); its consumer costs MACs.
"""
import keras
import numpy as np

from tfsnn import report as rp
from tfsnn.geometry import conv_fanout, conv_macs
from tfsnn.layers import encoders
from tfsnn.layers.neurons import lif

try:  # the neuron base class of every fused / stateful neuron layer, where present
    from tfsnn.layers.neurons.base import NeuronLayer as _NeuronBase
    _NEURONS = (_NeuronBase, lif.LIF)
except ImportError:  # pragma: no cover
    _NEURONS = (lif.LIF,)
_ENCODERS = (encoders.PoissonEncoder, encoders.DirectEncoder)


def _inner(layer):
    return getattr(layer, "layer", layer) if isinstance(layer, keras.layers.Wrapper) else layer


def _synaptic(layer):
    return isinstance(_inner(layer), (keras.layers.Conv2D, keras.layers.Dense,
                                      keras.layers.AveragePooling2D))


def _fanout(layer, in_shape):
    """Fan-out per input entry of one frame (``[H, W]`` map or an int) and the ANN MACs."""
    inner = _inner(layer)
    if isinstance(inner, keras.layers.Dense):
        return int(inner.units), int(in_shape[-1]) * int(inner.units)
    h, w, c = (int(d) for d in in_shape[-3:])
    if isinstance(inner, keras.layers.AveragePooling2D):
        fan = conv_fanout((h, w), inner.pool_size, inner.strides, inner.padding, 1)
        return fan, int(fan.sum()) * c
    fan = conv_fanout((h, w), inner.kernel_size, inner.strides, inner.padding, inner.filters)
    return fan, conv_macs((h, w), c, inner.kernel_size, inner.strides, inner.padding,
                          inner.filters)


def _plan(model):
    """``[(row name, role, synaptic layer or None, neuron layer or None)]`` in model order."""
    plan, current = [], None
    for layer in model.layers:
        if isinstance(layer, _ENCODERS):
            plan.append([layer.name, "encoder", None, layer])
        elif _synaptic(layer):
            current = [layer.name, "output", layer, None]
            plan.append(current)
        elif isinstance(layer, _NEURONS) and current is not None and current[3] is None:
            current[1], current[3] = "hidden", layer
    syn = [p for p in plan if p[2] is not None]
    if not syn:
        raise ValueError(f"model {model.name!r} has no Conv2D / Dense / AveragePooling2D layer")
    for p in syn[:-1]:
        if p[3] is None:
            p[1] = "synapses"  # e.g. an average pooling feeding the next conv directly
    return [tuple(p) for p in plan]


class ActivityCounter:
    """Accumulates per-layer spikes, SOPs and MACs of ``model`` over evaluation batches.

    ``update(x, y=None)`` runs one batch (``training=False``) and returns the model's output;
    ``rows()`` gives the per-image rows (``tfsnn.report.ROW_KEYS``); ``report(meta)`` a
    ``tfsnn.report.Report``. The model's outputs must have a time axis ``[B, T, ...]`` at every
    counted layer.
    """

    def __init__(self, model):
        self.model = model
        self.plan = _plan(model)
        outs = []
        for _, _, syn, neu in self.plan:
            if syn is not None:
                outs.append(syn.input)
            if neu is not None:
                outs.append(neu.output)
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self._probe = keras.Model(inputs, [*outs, model.output])
        self._fan = {}
        self.n_images, self.timesteps, self.correct = 0, None, 0
        self._acc = {name: {"spikes": 0.0, "sops": 0.0, "macs": 0.0, "neurons": 0}
                     for name, *_ in self.plan}

    def probe(self, x):
        """The arrays ``add`` counts: synaptic-layer inputs and neuron-layer outputs (in
        ``plan`` order), then the model's output, for one batch ``x``."""
        return [np.asarray(o) for o in self._probe(x, training=False)]

    def update(self, x, y=None):
        """Run and count one batch; returns the model's output."""
        return self.add(self.probe(x), y)

    def add(self, outputs, y=None):
        """Count one batch's ``probe`` outputs; returns the model's output."""
        logits, outs = outputs[-1], outputs[:-1]
        i = 0
        for name, role, syn, neu in self.plan:
            acc = self._acc[name]
            if syn is not None:
                xin = outs[i]
                i += 1
                self._count_synapses(name, syn, xin, acc)
            if neu is not None:
                s = outs[i]
                i += 1
                if s.ndim < 3:
                    raise ValueError(f"layer {neu.name!r}: output {s.shape} has no time axis "
                                     "[batch, time, ...]")
                self.timesteps = s.shape[1]
                acc["neurons"] = int(np.prod(s.shape[2:]))
                if _integral(s):  # an analog encoder (DirectEncoder) emits no spikes
                    acc["spikes"] += float(np.abs(s).sum())
            elif role == "output":
                acc["neurons"] = int(_inner(syn).units if hasattr(_inner(syn), "units")
                                     else np.prod(syn.output.shape[2:]))
        self.n_images += len(logits)
        if y is not None:
            pred = np.argmax(logits.reshape(len(logits), -1, logits.shape[-1])[:, -1], axis=-1)
            self.correct += int(np.sum(pred == np.asarray(y).reshape(-1)))
        return logits

    def _count_synapses(self, name, syn, xin, acc):
        if name not in self._fan:
            self._fan[name] = _fanout(syn, xin.shape[2:])
        fan, _ = self._fan[name]
        f = np.asarray(fan, np.float64)
        weights = f[..., None] if f.ndim == 2 else f  # [H, W, 1] broadcast over channels
        if _integral(xin):
            acc["sops"] += float((np.abs(xin) * weights).sum())
        else:
            acc["macs"] += float(((xin != 0) * weights).sum())

    def rows(self):
        """Per-image rows (``tfsnn.report.ROW_KEYS``) of what was counted so far."""
        if not self.n_images:
            raise ValueError("ActivityCounter: no batch counted yet (call update)")
        n, t = self.n_images, self.timesteps or 1
        rows = []
        for name, role, syn, neu in self.plan:
            a = self._acc[name]
            neurons = a["neurons"]
            spikes = a["spikes"] / n
            rows.append({
                "layer": name, "role": role, "neurons": neurons, "spikes_per_image": spikes,
                "firing_rate": (spikes / neurons / t if neurons and role in ("encoder", "hidden")
                                else None),
                "sops_per_image": a["sops"] / n, "input_macs_per_image": a["macs"] / n,
                "ann_macs_per_image": float(self._fan[name][1]) if name in self._fan else 0.0,
                "neuron_updates_per_image": (float(neurons * t) if role in ("encoder", "hidden")
                                             else 0.0)})
        return rows

    @property
    def accuracy(self):
        """Accuracy of the last-step (or only) output over the labelled batches counted."""
        return self.correct / self.n_images if self.n_images else None

    def report(self, meta=None, **kwargs):
        """``tfsnn.report.Report`` of the counts (``kwargs``: devices, ann_devices, host)."""
        m = {"n_images": self.n_images, "timesteps": self.timesteps, **(meta or {})}
        return rp.Report.from_rows(self.rows(), m, **kwargs)


def _integral(x):
    return bool(np.all(np.equal(np.mod(x, 1), 0)))


def count_activity(model, data, labels=None, batch_size=32, max_examples=None):
    """Count spikes / SOPs / MACs of ``model`` on ``data`` (array ``[N, ...]`` or a ``tf.data``
    dataset of ``(x, y)`` / ``x`` batches); returns the ``ActivityCounter``."""
    import tensorflow as tf
    counter = ActivityCounter(model)
    seen = 0
    if isinstance(data, tf.data.Dataset):
        for item in data:
            x, y = item if isinstance(item, (tuple, list)) else (item, None)
            x = np.asarray(x)
            if max_examples is not None:
                x = x[:max_examples - seen]
            if not len(x):
                break
            counter.update(x, None if y is None else np.asarray(y)[:len(x)])
            seen += len(x)
        return counter
    x = np.asarray(data)
    n = len(x) if max_examples is None else min(len(x), int(max_examples))
    for i in range(0, n, batch_size):
        counter.update(x[i:i + batch_size],
                       None if labels is None else np.asarray(labels)[i:i + batch_size])
    return counter

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
  ``sum |s|`` spikes; ``neurons`` = its output size per step; ``neuron_updates`` = neurons x T;
  ``silent_fraction`` (hidden rows) = the fraction of its neurons that fired on none of the
  counted images (under a spike-gated surrogate such as Lee's these get no gradient).

Rows are named after the synaptic layer; each carries the neurons / spikes of the first neuron
layer that follows it (before the next synaptic layer), as in the converted SNN where ``conv3``
names both the synapses and the neurons behind them. The encoder gets its own row; a synaptic
layer with no neuron layer after it has role ``output`` if it is the last (the output ``Dense``
feeding a readout), else ``synapses`` (no neurons of its own, e.g. an average pooling). An
analog encoder (``DirectEncoder``) emits no spikes (count 0); its consumer costs MACs.

**IIR nets** (``tfsnn.models.iir``): an ``IIRSpikingDense`` / ``IIRSpikingConv2D`` is both the
synapses and their neurons (one row, role ``hidden``, its last layer included: its spikes are
the counted logits). Its input is the PSP of a ``DualExpIIR`` / ``FirstOrderLowPass`` filter
that runs on every presynaptic element: even a spike input leaves a decaying, real-valued trace,
so the layer multiplies (a weight times an analog value) and costs
``count(psp != 0) x fan-out`` **MACs** (always analog, whatever the values; ``tfsnn.report``
charges them on its host, 45 nm fp32, on every device). The filters' own state updates (one
1st / 2nd-order recurrence per presynaptic element per step, ``elements x T`` per image, e.g.
784 x 25 for snn_mlp_1's first synapse) are **not counted** (neither as MACs nor as neuron
updates): no device model here has a per-op figure for a per-synapse filter (a Loihi neuron
update filters the *post*-synaptic current), so any number would be invented; the totals are
thus a lower bound for the IIR nets. With the copy encoding the first filter holds the image
(``held_steps``): there is no encoder layer, hence no encoder row. ``PSPMaxPool2D`` (a max
over the PSP, or an OR of spikes) has no synapses and no row; ``Dropout`` / ``Reshape`` /
``SumReadout`` cost nothing.

**Subclassed models with ``snn_record(x)``** (``tfsnn.models.proxy.ProxyNet``): one SNN pass
returns ``[(synaptic layer, input [B, T', ...], spikes [B, T, ...])]`` in order; each entry is a
row named after the layer (role ``hidden``: its IF neurons). The first entry's input is the
model input (analog: MACs; ``ProxyNet`` gives the image once, ``T' = 1``, as ``BN(conv1(x))`` is
computed once and held as a constant current); later inputs are the previous layer's spikes
after the OR max pool / flatten (events: SOPs). The output is the last layer's spike count.
"""
import keras
import numpy as np
import tensorflow as tf

from tfsnn import report as rp
from tfsnn.geometry import conv_fanout, conv_macs
from tfsnn.layers import encoders
from tfsnn.layers.neurons import lif
from tfsnn.layers.neurons.iir import IIRSpikingConv2D, IIRSpikingDense

try:  # the neuron base class of every fused / stateful neuron layer, where present
    from tfsnn.layers.neurons.base import NeuronLayer as _NeuronBase
    _NEURONS = (_NeuronBase, lif.LIF)
except ImportError:  # pragma: no cover
    _NEURONS = (lif.LIF,)
_ENCODERS = (encoders.PoissonEncoder, encoders.DirectEncoder)
_IIR = (IIRSpikingDense, IIRSpikingConv2D)  # synapses + neurons in one layer, analog PSP in
_DENSE = (keras.layers.Dense, IIRSpikingDense)


def _inner(layer):
    return getattr(layer, "layer", layer) if isinstance(layer, keras.layers.Wrapper) else layer


def _synaptic(layer):
    return isinstance(_inner(layer), (keras.layers.Conv2D, keras.layers.Dense,
                                      keras.layers.AveragePooling2D, *_IIR))


def _fanout(layer, in_shape):
    """Fan-out per input entry of one frame (``[H, W]`` map or an int) and the ANN MACs."""
    inner = _inner(layer)
    if isinstance(inner, _DENSE):
        return int(inner.units), int(in_shape[-1]) * int(inner.units)
    h, w, c = (int(d) for d in in_shape[-3:])
    if isinstance(inner, keras.layers.AveragePooling2D):
        fan = conv_fanout((h, w), inner.pool_size, inner.strides, inner.padding, 1)
        return fan, int(fan.sum()) * c
    fan = conv_fanout((h, w), inner.kernel_size, inner.strides, inner.padding, inner.filters)
    return fan, conv_macs((h, w), c, inner.kernel_size, inner.strides, inner.padding,
                          inner.filters)


def _plan(model):
    """``[(row name, role, synaptic layer or None, neuron layer or None, analog input)]`` in
    model order (``analog``: True = MACs whatever the values; None = SOPs iff integer-valued)."""
    plan, current = [], None
    for layer in model.layers:
        if isinstance(layer, _ENCODERS):
            plan.append([layer.name, "encoder", None, layer, None])
        elif isinstance(layer, _IIR):
            current = [layer.name, "hidden", layer, layer, True]
            plan.append(current)
        elif _synaptic(layer):
            current = [layer.name, "output", layer, None, None]
            plan.append(current)
        elif isinstance(layer, _NEURONS) and current is not None and current[3] is None:
            current[1], current[3] = "hidden", layer
    syn = [p for p in plan if p[2] is not None]
    if not syn:
        raise ValueError(f"model {model.name!r} has no Conv2D / Dense / AveragePooling2D / IIR "
                         "spiking layer")
    for p in syn[:-1]:
        if p[3] is None:
            p[1] = "synapses"  # e.g. an average pooling feeding the next conv directly
    return [tuple(p) for p in plan]


def _record_plan(model, record):
    """The plan of an ``snn_record`` pass: one ``hidden`` row per synaptic layer (its IF
    neurons); the first layer's input is the model input (analog), later ones spikes."""
    if not record:
        raise ValueError(f"model {model.name!r}: snn_record returned no layer")
    names = [layer.name for layer, _, _ in record]
    if len(set(names)) != len(names):
        raise ValueError(f"model {model.name!r}: snn_record layer names repeat: {names}")
    return [(layer.name, "hidden", layer, layer, True if i == 0 else None)
            for i, (layer, _, _) in enumerate(record)]


class ActivityCounter:
    """Accumulates per-layer spikes, SOPs and MACs of ``model`` over evaluation batches.

    ``update(x, y=None)`` runs one batch (``training=False``) and returns the model's output;
    ``rows()`` gives the per-image rows (``tfsnn.report.ROW_KEYS``); ``report(meta)`` a
    ``tfsnn.report.Report``. The model's outputs must have a time axis ``[B, T, ...]`` at every
    counted layer. A model with an ``snn_record(x)`` method (``ProxyNet``) is counted from it
    (module docstring); its ``plan`` is known after the first batch.
    """

    def __init__(self, model):
        self.model = model
        self._record = callable(getattr(model, "snn_record", None))
        self.plan, self._probe = None, None
        self._fan = {}
        self.n_images, self.timesteps, self.correct = 0, None, 0
        if self._record:
            return
        self._set_plan(_plan(model))
        outs = []
        for _, _, syn, neu, _ in self.plan:
            if syn is not None:
                outs.append(syn.input)
            if neu is not None:
                outs.append(neu.output)
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        probe = keras.Model(inputs, [*outs, model.output])
        # one traced graph for every batch: called eagerly, the neurons' XLA loops (jit_compile)
        # were compiled again on every batch (minutes for a 10k-image test split)
        self._probe = tf.function(lambda x: probe(x, training=False), reduce_retracing=True)

    def _set_plan(self, plan):
        self.plan = plan
        self._acc = {name: {"spikes": 0.0, "sops": 0.0, "macs": 0.0, "neurons": 0,
                            "fired": None}
                     for name, *_ in plan}

    def probe(self, x):
        """The arrays ``add`` counts: synaptic-layer inputs and neuron-layer outputs (in
        ``plan`` order), then the model's output, for one batch ``x``."""
        if not self._record:
            return [np.asarray(o) for o in self._probe(tf.convert_to_tensor(x))]
        record = self.model.snn_record(x)
        if self.plan is None:
            self._set_plan(_record_plan(self.model, record))
        arrays = {}  # one host copy of a tensor that is both spikes and the next input
        for _, inp, spikes in record:
            for a in (inp, spikes):
                if id(a) not in arrays:
                    arrays[id(a)] = np.asarray(a)
        outs = [arrays[id(a)] for _, inp, spikes in record for a in (inp, spikes)]
        return [*outs, outs[-1].sum(axis=1)]  # output: the last layer's spike counts

    def update(self, x, y=None):
        """Run and count one batch; returns the model's output."""
        return self.add(self.probe(x), y)

    def add(self, outputs, y=None):
        """Count one batch's ``probe`` outputs; returns the model's output."""
        if self.plan is None:
            raise ValueError("ActivityCounter.add: call probe first (the plan of a model "
                             "counted through snn_record comes from its first pass)")
        logits, outs = outputs[-1], outputs[:-1]
        i = 0
        for name, role, syn, neu, analog in self.plan:
            acc = self._acc[name]
            if syn is not None:
                xin = outs[i]
                i += 1
                self._count_synapses(name, syn, xin, acc, analog)
            if neu is not None:
                s = outs[i]
                i += 1
                if s.ndim < 3:
                    raise ValueError(f"layer {neu.name!r}: output {s.shape} has no time axis "
                                     "[batch, time, ...]")
                self.timesteps = s.shape[1]
                acc["neurons"] = int(np.prod(s.shape[2:]))
                if _integral(s):  # an analog encoder (DirectEncoder) emits no spikes
                    acc["spikes"] += float(np.abs(s).sum(dtype=np.float64))
                    fired = np.any(s != 0, axis=(0, 1))  # [neurons ...] of this batch
                    acc["fired"] = fired if acc["fired"] is None else acc["fired"] | fired
            elif role == "output":
                acc["neurons"] = int(_inner(syn).units if hasattr(_inner(syn), "units")
                                     else np.prod(syn.output.shape[2:]))
        self.n_images += len(logits)
        if y is not None:
            pred = np.argmax(logits.reshape(len(logits), -1, logits.shape[-1])[:, -1], axis=-1)
            self.correct += int(np.sum(pred == np.asarray(y).reshape(-1)))
        return logits

    def _count_synapses(self, name, syn, xin, acc, analog=None):
        if name not in self._fan:
            self._fan[name] = _fanout(syn, xin.shape[2:])
        fan, _ = self._fan[name]
        f = np.asarray(fan, np.float64)
        weights = f[..., None] if f.ndim == 2 else f  # [H, W, 1] broadcast over channels
        if not analog and _integral(xin):  # per input entry over batch and time, then x fan-out
            acc["sops"] += float((np.abs(xin).sum(axis=(0, 1), dtype=np.float64)
                                  * weights).sum())
        else:
            acc["macs"] += float((np.count_nonzero(xin, axis=(0, 1)) * weights).sum())

    def rows(self):
        """Per-image rows (``tfsnn.report.ROW_KEYS``) of what was counted so far."""
        if not self.n_images:
            raise ValueError("ActivityCounter: no batch counted yet (call update)")
        n, t = self.n_images, self.timesteps or 1
        rows = []
        for name, role, *_ in self.plan:
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
                                             else 0.0),
                "silent_fraction": (1.0 - float(np.mean(a["fired"]))
                                    if role == "hidden" and a["fired"] is not None else None)})
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


def write_run_report(run_dir, model, data, meta=None, max_examples=None):
    """The trainers' end-of-run count (``scripts/train_snn.py``, every method with a test split).

    Counts ``model`` on ``data`` (``count_activity``: a ``tf.data`` dataset of ``(x, y)``
    batches, or an array), writes ``report.md`` / ``report.json`` into ``run_dir``
    (``tfsnn.report.write_report``) and returns the ``results.json`` entries
    ``spikes_per_image``, ``sops_per_image`` (per test image) and ``energy_J_per_image``
    (``{device: J}``). ``meta``: report metadata (dataset, model, ...).
    """
    rep = count_activity(model, data, max_examples=max_examples).report(meta)
    rp.write_report(run_dir, rep)
    t = rep.totals
    return {"spikes_per_image": t["spikes_per_image"], "sops_per_image": t["sops_per_image"],
            "energy_J_per_image": t["energy_J"]}

"""Run a converted integer SNN for T steps and count its spikes and SOPs (docs/specs/all_int_snn.md
§2.1, §2.7, §3).

``simulate(snn, data, ...)`` runs each batch through the SNN layer by layer over the whole time
axis (time folded into batch for the synaptic ops; the neuron recurrence is a ``tf.scan``), all
under one ``tf.function`` per batch shape, passing each layer only the steps up to its last
event (the layers' ``compact`` forms: exact, cost follows the active steps rather than T), and
returns a ``SimResult`` with per-step logits, predictions and accuracy and per-layer, per-step
spike (+1 / -1) and SOP counts (definitions in ``tfsnn.accounting``). The input image is
injected at t=0 only (the encoder holds it).

Any SNN ``tfsnn.convert`` builds runs here: the walker (``run_graph``) follows the SNN's graph
(``tfsnn.conversion.graph.SnnGraph``) and calls each layer's ``compact`` form (the analog layers
before the encoder: their plain call). Spikes are counted per spiking layer; SOPs per receiving
layer as input events x ``tfsnn.conversion.rules.fanout`` (an increment of magnitude m reaching
a synapse, e.g. after a sum pool, is m events; encoder events count once each), summed into the
row of the neurons the receiver feeds. ``SimResult.convergence_problems`` flags (and
``simulate`` warns about) runs whose T or threshold tables were too short to be exact.
"""
import dataclasses
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfsnn import accounting
from tfsnn.conversion.graph import SnnGraph
from tfsnn.layers.neurons.integer import SpikingConv2D, SpikingNeuron
from tfsnn.timeaxis import pad_time


@dataclasses.dataclass
class SimResult:
    """What ``simulate`` measured. ``N`` images, ``nb`` batches, ``T`` steps, ``L`` spiking
    layers (encoder(s) first), ``R`` rows receiving SOPs (spiking layers fed by synapses, then
    the output; an ``IntegerSynapse``'s SOPs count in the row of the neurons it feeds)."""

    layer_names: list        # [L] spiking layers
    sop_layer_names: list    # [R] rows receiving SOPs
    timesteps: int
    amplitude: int           # 2^k: y_SNN = 2^k y_ANN and counts = 2^k levels at convergence
    logits: np.ndarray       # float32 [N, T, classes]
    correct: np.ndarray      # int64 [nb, T] correct predictions per batch and step (0 w/o labels)
    batch_sizes: np.ndarray  # int64 [nb]
    pos: np.ndarray          # int64 [nb, L, T] +1 events (encoder: its 2^k-amplitude events)
    neg: np.ndarray          # int64 [nb, L, T] -1 events
    sops: np.ndarray         # int64 [nb, R, T] SOPs
    last_spike_step: np.ndarray  # int64 [N] last step with a spike in any layer, -1 if none
    labels: np.ndarray = None        # [N] or None
    ann_logits: np.ndarray = None    # float32 [N, classes] of the quantized ANN, or None
    final_counts: list = None        # per spiking layer int [N, H, W, C] net counts at T-1
    hidden_indices: list = None      # indices into layer_names of H (non-encoder spiking layers)
    saturated: dict = None           # {layer: neuron x image pairs at a threshold table's end}
    neurons: dict = None             # {row: neurons} (spiking layers, output units)
    ann_macs: dict = None            # {row: ANN MACs per image}, ``SnnGraph.ann_macs``

    def __post_init__(self):
        if self.hidden_indices is None:
            self.hidden_indices = list(range(1, len(self.layer_names)))

    @property
    def n_images(self) -> int:
        return int(self.batch_sizes.sum())

    @property
    def predictions(self) -> np.ndarray:
        """int64 ``[N, T]``: argmax of the logits at each step."""
        return np.argmax(self.logits, axis=-1)

    @property
    def accuracy_per_step(self) -> np.ndarray:
        """float ``[T]``: accuracy at each step (needs labels)."""
        return self.correct.sum(0) / max(self.n_images, 1)

    @property
    def accuracy(self) -> float:
        """Accuracy at the last step."""
        return float(self.accuracy_per_step[-1])

    @property
    def ann_predictions(self):
        return None if self.ann_logits is None else np.argmax(self.ann_logits, axis=-1)

    @property
    def ann_accuracy(self):
        if self.ann_logits is None or self.labels is None:
            return None
        return float(np.mean(self.ann_predictions == self.labels))

    def _need_ann(self, what):
        if self.ann_logits is None:
            raise ValueError(f"SimResult.{what} needs the ANN's logits: run simulate(..., ann=model)")

    @property
    def agreement_per_step(self) -> np.ndarray:
        """float ``[T]``: fraction of images whose SNN prediction at step t equals the ANN's."""
        self._need_ann("agreement_per_step")
        return np.mean(self.predictions == self.ann_predictions[:, None], axis=0)

    @property
    def disagreements(self) -> int:
        """Images whose SNN prediction at the last step differs from the ANN's."""
        self._need_ann("disagreements")
        return int(np.sum(self.predictions[:, -1] != self.ann_predictions))

    @property
    def equal_from_step(self):
        """First (0-based) step from which SNN and ANN predictions agree on every image (None if
        they do not at the last step)."""
        eq = self.agreement_per_step == 1.0
        if not eq[-1]:
            return None
        bad = np.flatnonzero(~eq)
        return int(bad[-1] + 1) if bad.size else 0

    @property
    def converged_step(self) -> int:
        """First step from which no layer spikes on any image (the state is then stationary)."""
        return int(self.last_spike_step.max(initial=-1) + 1)

    @property
    def converged(self) -> bool:
        """True if the network was silent at the last step on every image (T was enough)."""
        return self.converged_step < self.timesteps

    def convergence_problems(self) -> list:
        """Why the SNN may differ from the quantized ANN (empty if none): a layer still spiking
        at the last step (T too small), or neurons whose final level sits at an end of their
        threshold table (the ANN level may lie beyond: convert with a larger ``num_levels`` /
        ``timesteps``)."""
        out = []
        if not self.converged:
            out.append(f"the SNN still spiked at the last step ({self.timesteps - 1}): counts "
                       "may not have reached the ANN levels; increase timesteps")
        for name, n in (self.saturated or {}).items():
            if n:
                out.append(f"layer {name!r}: {n} neuron x image pairs end at the end of the "
                           "threshold table (level possibly clipped); convert with a larger "
                           "timesteps / num_levels")
        return out

    def spikes_per_image(self) -> dict:
        """dict layer -> spike events per image (+1 and -1), plus ``total`` and ``total_hidden``
        (encoders excluded, the original's ``spike_num``)."""
        ev = (self.pos + self.neg).sum(axis=(0, 2)) / max(self.n_images, 1)
        d = {n: float(v) for n, v in zip(self.layer_names, ev)}
        d["total"], d["total_hidden"] = float(ev.sum()), float(ev[self.hidden_indices].sum())
        return d

    def sops_per_image(self) -> dict:
        """dict receiving row -> SOPs per image, plus ``total``."""
        s = self.sops.sum(axis=(0, 2)) / max(self.n_images, 1)
        d = {n: float(v) for n, v in zip(self.sop_layer_names, s)}
        d["total"] = float(s.sum())
        return d

    def stat_series(self) -> dict:
        """The six per-(batch, step) series of the stat files (``tfsnn.accounting.stat_series``)."""
        return accounting.stat_series(self.correct, self.pos, self.neg, self.sops,
                                      hidden=self.hidden_indices)

    def layer_table(self, ann_macs=None, neurons=None) -> list:
        """Per-layer rows (dicts with the keys of ``tfsnn.report.ROW_KEYS``), per image: one per
        spiking layer (role ``encoder`` / ``hidden``) and the output (role ``output``).

        Args:
          ann_macs: ``{row: ANN MACs per image}``; default the SNN's (``self.ann_macs``).
          neurons: ``{row: neurons}``; default the SNN's (``self.neurons``).
        """
        ann_macs = self.ann_macs if ann_macs is None else ann_macs
        neurons = self.neurons if neurons is None else neurons
        if ann_macs is None or neurons is None:
            raise ValueError("layer_table: this result has no ann_macs / neurons; pass them "
                             "(tfsnn.accounting.ann_macs(snn), tfsnn.report.neuron_counts(snn))")
        missing = [n for n in [*self.layer_names, *self.sop_layer_names] if n not in neurons]
        if missing:
            raise ValueError(f"neurons: no count for layers {missing}")
        spikes, sops = self.spikes_per_image(), self.sops_per_image()
        t = self.timesteps
        hidden = {self.layer_names[i] for i in self.hidden_indices}
        rows = []
        for name in dict.fromkeys([*self.layer_names, *self.sop_layer_names]):
            role = ("hidden" if name in hidden else
                    "encoder" if name in self.layer_names else "output")
            n = int(neurons[name])
            s = spikes.get(name, 0.0)
            rows.append({
                "layer": name, "role": role, "neurons": n, "spikes_per_image": s,
                "firing_rate": s / n / t if role != "output" else None,
                "sops_per_image": sops.get(name, 0.0),
                "input_macs_per_image": float(ann_macs.get(name, 0.0)) if role == "encoder"
                else 0.0,
                "ann_macs_per_image": float(ann_macs.get(name, 0.0)),
                "neuron_updates_per_image": float(n * t) if role != "output" else 0.0})
        return rows

    def table(self, ann_macs=None, neurons=None, dataset=None, **kwargs):
        """The per-layer spike / SOP / energy ``tfsnn.report.Report`` (``.text()``,
        ``.markdown()``, ``.to_json()``); ``kwargs`` go to ``tfsnn.report.from_sim``."""
        from tfsnn import report
        if (self.ann_macs if ann_macs is None else ann_macs) is None or (
                self.neurons if neurons is None else neurons) is None:
            self.layer_table(ann_macs, neurons)  # raises, naming what is missing
        return report.from_sim(self, self.ann_macs if ann_macs is None else ann_macs,
                               neurons=self.neurons if neurons is None else neurons,
                               dataset=dataset, **kwargs)


def _batches(data, labels, batch_size, max_examples):
    """Yield ``(images, labels or None)`` numpy batches from arrays or a tf.data dataset."""
    if isinstance(data, tf.data.Dataset):
        seen = 0
        for item in data:
            x, y = (item if isinstance(item, (tuple, list)) else (item, None))
            x = np.asarray(x)
            y = None if y is None else np.asarray(y)
            if max_examples is not None:
                x = x[:max_examples - seen]
                y = None if y is None else y[:len(x)]
            if len(x) == 0:
                return
            seen += len(x)
            yield x, y
        return
    x = np.asarray(data)
    n = len(x) if max_examples is None else min(len(x), int(max_examples))
    y = None if labels is None else np.asarray(labels)
    if y is not None and len(y) != len(x):
        raise ValueError(f"labels has {len(y)} entries but data has {len(x)} images")
    for i in range(0, n, batch_size):
        yield x[i:min(i + batch_size, n)], None if y is None else y[i:min(i + batch_size, n)]


def num_batches(data, batch_size, max_examples=None):
    """Number of batches ``simulate`` will run on an array (None for a dataset of unknown size)."""
    if isinstance(data, tf.data.Dataset):
        card = int(data.cardinality())
        return None if card < 0 else card
    n = len(data) if max_examples is None else min(len(data), int(max_examples))
    return -(-n // batch_size)


_BATCH_FNS = weakref.WeakKeyDictionary()  # snn -> {(timesteps, return_counts): tf.function}


def make_batch_fn(snn, timesteps=None, return_counts=False):
    """A ``tf.function`` images ``[B, H, W, C]`` -> dict of per-batch results (see ``simulate``).

    Cached per SNN model, so repeated ``simulate`` calls do not trace again.
    """
    fns = _BATCH_FNS.setdefault(snn, {})
    key = (timesteps, bool(return_counts))
    if key not in fns:
        fns[key] = _make_batch_fn(SnnGraph.of(snn), timesteps, return_counts)
    return fns[key]


def check_timesteps(graph, timesteps):
    """``timesteps`` (default the SNN's), checked against the threshold tables."""
    t = graph.default_timesteps if timesteps is None else int(timesteps)
    t_max = graph.max_timesteps
    if not 1 <= t <= t_max:
        raise ValueError(f"timesteps must be in 1..{t_max} (the thresholds table size), got {t}; "
                         "convert again with a larger timesteps / num_levels")
    return t


def run_graph(graph, images, timesteps):
    """Walk the SNN graph on images ``[B, H, W, C]`` with every layer's ``compact`` form (the
    analog layers before the encoder: their plain call). Returns ``{layer name: tensor}``:
    spiking / increment tensors ``[B, t_c, ...]`` whose later steps up to ``timesteps`` are
    silent (exact), and the output's logits ``[B, timesteps, classes]``."""
    vals = {}
    for layer, ins in graph.nodes:
        if isinstance(layer, keras.layers.InputLayer):
            vals[layer.name] = images
            continue
        xs = [vals[i] for i in ins]
        x = xs if len(xs) > 1 else xs[0]
        if hasattr(layer, "compact"):
            vals[layer.name] = layer.compact(x, timesteps)
        else:
            vals[layer.name] = layer(x, training=False)
    return vals


def _saturated(layer, x):
    """Neurons (x images) whose final target level sits at an end of the threshold table: their
    ANN level may lie beyond it (the count is then clipped, the SNN no longer exact)."""
    if isinstance(layer, SpikingConv2D):
        lev = layer.levels_from_counts(tf.reduce_sum(tf.cast(x, tf.float32), axis=1))
        bad = lev >= layer.num_levels
    elif isinstance(layer, SpikingNeuron):
        v = tf.reduce_sum(tf.cast(x, "int32" if layer.use_int else "float64"), axis=1)
        lev = layer.levels_from_membrane(v)
        bad = lev >= layer.min_level + layer.num_levels
        if layer.min_level < 0:
            bad = bad | (lev <= layer.min_level)
    else:
        return None
    return tf.reduce_sum(tf.cast(bad, tf.int64))


def _make_batch_fn(graph, timesteps, return_counts):
    t = check_timesteps(graph, timesteps)
    fans = {key: tf.constant(f, tf.int64) for key, f in graph.fanouts.items()}
    rows = graph.sop_row_names
    inputs = {l.name: ins for l, ins in graph.nodes}

    @tf.function(reduce_retracing=True)
    def run(x):
        vals = run_graph(graph, x, t)
        logits = vals[graph.output.name]
        pos, neg, active, sat = [], [], [], []
        for layer in graph.spiking:
            sp = tf.cast(vals[layer.name], tf.int32)
            unit = graph.units[layer.name]
            axes = list(range(2, len(sp.shape)))
            n_ev = tf.reduce_sum(tf.abs(sp), axis=[0] + axes) // unit
            net = tf.reduce_sum(sp, axis=[0] + axes) // unit
            pos.append(pad_time(((n_ev + net) // 2)[None], t)[0])
            neg.append(pad_time(((n_ev - net) // 2)[None], t)[0])
            active.append(pad_time(tf.reduce_any(sp != 0, axis=axes), t))
            ins = inputs[layer.name]
            sat.append(_saturated(layer, vals[ins[0]]) if ins else None)
        sops = {r: tf.zeros([t], tf.int64) for r in rows}
        for layer, ins, row in graph.receivers:
            for i in ins:  # SOPs: input events x exact fan-out of the receiving layer
                ev = tf.cast(tf.abs(tf.cast(vals[i], tf.int32)) // graph.units[i], tf.int64)
                axes = list(range(2, len(ev.shape)))
                sop = tf.reduce_sum(ev * fans[(layer.name, i)], axis=[0] + axes)
                sops[row] = sops[row] + pad_time(sop[None], t)[0]
        active = tf.reduce_any(tf.stack(active), axis=0)  # [B, T]
        steps = tf.range(t, dtype=tf.int64)
        last = tf.reduce_max(tf.where(active, steps[None], -1), axis=1)
        res = {"logits": logits, "pos": tf.cast(tf.stack(pos), tf.int64),
               "neg": tf.cast(tf.stack(neg), tf.int64),
               "sops": tf.stack([sops[r] for r in rows]), "last": last,
               "saturated": tf.stack([tf.zeros([], tf.int64) if s is None else s for s in sat])}
        if return_counts:
            res["counts"] = [tf.reduce_sum(vals[l.name], axis=1) for l in graph.spiking]
        return res

    return run


def spike_trains(snn, images, timesteps=None):
    """Per-step spikes of every spiking layer on a few images (rasters, histograms).

    Returns ``{layer: int32 [n, T, ...]}`` (encoder events have amplitude 2^k; hidden spikes
    are -1, 0, +1).
    """
    graph = SnnGraph.of(snn)
    t = check_timesteps(graph, timesteps)
    vals = run_graph(graph, tf.constant(images, tf.float32), t)
    return {l.name: pad_time(tf.cast(vals[l.name], tf.int32), t).numpy() for l in graph.spiking}


def simulate(snn: keras.Model, data, labels=None, *, batch_size: int = 100,
             timesteps: int = None, noise_ratio: float = 0.0, seed: int = None,
             ann: keras.Model = None, max_examples: int = None, return_counts: bool = False,
             progress: bool = False, warn: bool = True) -> SimResult:
    """Run the SNN on images and collect per-step statistics.

    Args:
      snn: a model from ``tfsnn.convert.convert``.
      data: images ``[N, H, W, C]`` (preprocessed as for the ANN, e.g. pixels / 256), or a
        ``tf.data.Dataset`` of ``(images, labels)`` or image batches.
      labels: ``[N]`` int labels for array data (optional).
      batch_size: batch size for array data.
      timesteps: steps to run (default the SNN's; at most its threshold table size).
      noise_ratio: ``r``: the SNN input is ``x (1 + r (U - 1/2))``, ``U ~ U[0, 1)`` per pixel,
        drawn fresh per batch (docs/specs/all_int_snn.md §2.7); the ANN always sees the clean ``x``.
      seed: seed of the noise.
      ann: the quantized Keras ANN; if given its logits on the same (clean) images are stored.
      max_examples: only the first ``max_examples`` images.
      return_counts: keep every spiking layer's final net counts per image (memory!).
      progress: a tqdm progress bar over batches.
      warn: warn (``RuntimeWarning``) about ``SimResult.convergence_problems()``.
    Returns:
      A ``SimResult``.
    """
    if noise_ratio < 0:
        raise ValueError(f"noise_ratio must be >= 0, got {noise_ratio!r}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    graph = SnnGraph.of(snn)
    run = make_batch_fn(snn, timesteps, return_counts)
    ann_fn = None if ann is None else tf.function(lambda x: ann(x, training=False),
                                                  reduce_retracing=True)
    rng = np.random.default_rng(seed)
    acc = {k: [] for k in ("logits", "pos", "neg", "sops", "last", "correct", "bs", "labels",
                           "ann", "counts", "saturated")}
    it = _batches(data, labels, batch_size, max_examples)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=num_batches(data, batch_size, max_examples), desc="snn batches",
                  unit="batch")
    for x, y in it:
        x = x.astype(np.float32)
        xs = x if noise_ratio == 0 else (
            x * (1.0 + noise_ratio * (rng.random(x.shape, dtype=np.float32) - 0.5)))
        r = run(tf.constant(xs))
        logits = r["logits"].numpy()
        acc["logits"].append(logits)
        for key in ("pos", "neg", "sops", "last", "saturated"):
            acc[key].append(r[key].numpy())
        acc["bs"].append(len(x))
        if y is not None:
            y = y.astype(np.int64).reshape(-1)
            acc["labels"].append(y)
            acc["correct"].append((np.argmax(logits, -1) == y[:, None]).sum(0))
        else:
            acc["correct"].append(np.zeros(logits.shape[1], np.int64))
        if ann_fn is not None:
            acc["ann"].append(ann_fn(tf.constant(x)).numpy())
        if return_counts:
            acc["counts"].append([c.numpy() for c in r["counts"]])
    if not acc["bs"]:
        raise ValueError("simulate: no images in data")
    counts = None
    if return_counts:
        counts = [np.concatenate([c[i] for c in acc["counts"]])
                  for i in range(len(graph.spiking))]
    res = SimResult(
        layer_names=graph.layer_names, sop_layer_names=graph.sop_row_names,
        timesteps=int(acc["logits"][0].shape[1]), amplitude=graph.amplitude,
        logits=np.concatenate(acc["logits"]), correct=np.stack(acc["correct"]).astype(np.int64),
        batch_sizes=np.asarray(acc["bs"], np.int64), pos=np.stack(acc["pos"]),
        neg=np.stack(acc["neg"]), sops=np.stack(acc["sops"]),
        last_spike_step=np.concatenate(acc["last"]),
        labels=np.concatenate(acc["labels"]) if acc["labels"] else None,
        ann_logits=np.concatenate(acc["ann"]) if acc["ann"] else None,
        final_counts=counts, hidden_indices=graph.hidden_indices,
        saturated={n: int(v) for n, v in zip(graph.layer_names, np.sum(acc["saturated"], 0))},
        neurons=graph.neurons(), ann_macs=graph.ann_macs())
    if warn:
        for problem in res.convergence_problems():
            warnings.warn(f"tfsnn.simulate: {problem}", RuntimeWarning, stacklevel=2)
    return res

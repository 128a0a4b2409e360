"""Run a converted integer SNN for T steps and count its spikes and SOPs (docs/specs/all_int_snn.md
§2.1, §2.7, §3).

``simulate(snn, data, ...)`` runs each batch through the SNN layer by layer over the whole time
axis (time folded into batch for the synaptic ops; the neuron recurrence is a ``tf.scan``), all
under one ``tf.function`` per batch shape, passing each layer only the steps up to its last
event (the layers' ``compact`` forms: exact, cost follows the active steps rather than T), and
returns a ``SimResult`` with per-step logits, predictions and accuracy and per-layer, per-step
spike (+1 / -1) and SOP counts (definitions in ``tfsnn.accounting``). The input image is injected at t=0 only (the encoder holds it).
"""
import dataclasses
import weakref

import numpy as np
import tensorflow as tf

from tfsnn import accounting
from tfsnn.conversion import split_snn
from tfsnn.timeaxis import pad_time


@dataclasses.dataclass
class SimResult:
    """What ``simulate`` measured. ``N`` images, ``nb`` batches, ``T`` steps, ``L`` spiking
    layers (encoder first), ``R`` receiving layers (hidden layers, then ``output``)."""

    layer_names: list        # [L] spiking layers
    sop_layer_names: list    # [R] receiving layers
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

    @property
    def n_images(self):
        return int(self.batch_sizes.sum())

    @property
    def predictions(self):
        """int64 ``[N, T]``: argmax of the logits at each step."""
        return np.argmax(self.logits, axis=-1)

    @property
    def accuracy_per_step(self):
        """float ``[T]``: accuracy at each step (needs labels)."""
        return self.correct.sum(0) / max(self.n_images, 1)

    @property
    def accuracy(self):
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

    @property
    def agreement_per_step(self):
        """bool ``[T]``: SNN predictions equal the ANN's on every image at step t."""
        return np.all(self.predictions == self.ann_predictions[:, None], axis=0)

    @property
    def disagreements(self):
        """Images whose SNN prediction at the last step differs from the ANN's."""
        return int(np.sum(self.predictions[:, -1] != self.ann_predictions))

    @property
    def equal_from_step(self):
        """First step from which SNN and ANN predictions agree on every image (None if never)."""
        eq = self.agreement_per_step
        if not eq[-1]:
            return None
        bad = np.flatnonzero(~eq)
        return int(bad[-1] + 1) if bad.size else 0

    @property
    def converged_step(self):
        """First step from which no layer spikes on any image (the state is then stationary)."""
        return int(self.last_spike_step.max(initial=-1) + 1)

    @property
    def converged(self):
        """True if the network was silent at the last step on every image (T was enough)."""
        return self.converged_step < self.timesteps

    def spikes_per_image(self):
        """dict layer -> spike events per image (+1 and -1), plus ``total`` and ``total_hidden``
        (encoder excluded, the original's ``spike_num``)."""
        ev = (self.pos + self.neg).sum(axis=(0, 2)) / max(self.n_images, 1)
        d = {n: float(v) for n, v in zip(self.layer_names, ev)}
        d["total"], d["total_hidden"] = float(ev.sum()), float(ev[1:].sum())
        return d

    def sops_per_image(self):
        """dict receiving layer -> SOPs per image, plus ``total``."""
        s = self.sops.sum(axis=(0, 2)) / max(self.n_images, 1)
        d = {n: float(v) for n, v in zip(self.sop_layer_names, s)}
        d["total"] = float(s.sum())
        return d

    def stat_series(self):
        """The six per-(batch, step) series of the stat files (``tfsnn.accounting.stat_series``)."""
        return accounting.stat_series(self.correct, self.pos, self.neg, self.sops,
                                   hidden=list(range(1, len(self.layer_names))))


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
        fns[key] = _make_batch_fn(snn, timesteps, return_counts)
    return fns[key]


def _make_batch_fn(snn, timesteps, return_counts):
    enc, hidden, out = split_snn(snn)
    t_max = min([l.num_levels for l in hidden], default=np.iinfo(np.int32).max)
    t = enc.timesteps if timesteps is None else int(timesteps)
    if not 1 <= t <= t_max:
        raise ValueError(f"timesteps must be in 1..{t_max} (the thresholds table size), got {t}; "
                         "convert again with a larger timesteps / num_levels")
    maps, n_cls = accounting.fanout_maps(snn)
    maps = [tf.constant(m, tf.int64) for m in maps]

    amp = int(enc.amplitude)

    @tf.function(reduce_retracing=True)
    def run(x):
        # Compact spike trains: [B, t_c, ...] per layer, every later step silent (exact).
        s = enc.compact(x, t)
        spikes = [s]
        for layer in hidden:
            s = layer.compact(s, t)
            spikes.append(s)
        logits = out.compact(s, t)
        pos, neg, sops, active = [], [], [], []
        for i, sp in enumerate(spikes):
            sp = tf.cast(sp, tf.int32)
            ev = tf.reduce_sum(tf.abs(sp), axis=-1)  # events per position [B, t_c, H, W]
            net = tf.reduce_sum(sp, axis=[0, 2, 3, 4])
            if i == 0:  # encoder: events of amplitude 2^k, all positive
                ev, net = ev // amp, net // amp
            n_ev = tf.reduce_sum(ev, axis=[0, 2, 3])
            pos.append(pad_time(((n_ev + net) // 2)[None], t)[0])
            neg.append(pad_time(((n_ev - net) // 2)[None], t)[0])
            active.append(pad_time(tf.reduce_any(ev > 0, axis=[2, 3]), t))
            ev = tf.cast(ev, tf.int64)
            if i < len(maps):  # SOPs of the receiving layer: events x exact fan-out
                sop = tf.reduce_sum(ev * maps[i], axis=[0, 2, 3])
            else:  # last hidden layer -> output: every event reaches n_cls synapses
                sop = tf.reduce_sum(ev, axis=[0, 2, 3]) * n_cls
            sops.append(pad_time(sop[None], t)[0])
        active = tf.reduce_any(tf.stack(active), axis=0)  # [B, T]
        steps = tf.range(t, dtype=tf.int64)
        last = tf.reduce_max(tf.where(active, steps[None], -1), axis=1)
        res = {"logits": logits, "pos": tf.cast(tf.stack(pos), tf.int64),
               "neg": tf.cast(tf.stack(neg), tf.int64), "sops": tf.stack(sops), "last": last}
        if return_counts:
            res["counts"] = [tf.reduce_sum(sp, axis=1) for sp in spikes]
        return res

    return run


def simulate(snn, data, labels=None, *, batch_size=100, timesteps=None, noise_ratio=0.0,
             seed=None, ann=None, max_examples=None, return_counts=False, progress=False):
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
    Returns:
      A ``SimResult``.
    """
    if noise_ratio < 0:
        raise ValueError(f"noise_ratio must be >= 0, got {noise_ratio!r}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    enc, hidden, out = split_snn(snn)
    run = make_batch_fn(snn, timesteps, return_counts)
    ann_fn = None if ann is None else tf.function(lambda x: ann(x, training=False),
                                                  reduce_retracing=True)
    rng = np.random.default_rng(seed)
    acc = {k: [] for k in ("logits", "pos", "neg", "sops", "last", "correct", "bs", "labels",
                           "ann", "counts")}
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
        for key in ("pos", "neg", "sops", "last"):
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
        counts = [np.concatenate([c[i] for c in acc["counts"]]) for i in range(len(hidden) + 1)]
    return SimResult(
        layer_names=[enc.name] + [l.name for l in hidden],
        sop_layer_names=[l.name for l in hidden] + [out.name],
        timesteps=int(acc["logits"][0].shape[1]), amplitude=int(enc.amplitude),
        logits=np.concatenate(acc["logits"]), correct=np.stack(acc["correct"]).astype(np.int64),
        batch_sizes=np.asarray(acc["bs"], np.int64), pos=np.stack(acc["pos"]),
        neg=np.stack(acc["neg"]), sops=np.stack(acc["sops"]),
        last_spike_step=np.concatenate(acc["last"]),
        labels=np.concatenate(acc["labels"]) if acc["labels"] else None,
        ann_logits=np.concatenate(acc["ann"]) if acc["ann"] else None,
        final_counts=counts)

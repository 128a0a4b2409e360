"""The IIR-SNN associative-memory task (docs/specs/iir_and_proxy.md §A.6-§A.7): ``train(config)``.

Data: ``associative_target.npy``, 10 binary patterns ``[300 channels, 300 steps]``. The network
(300-500-200-500-300, IIR synapses with tau_m = 8, tau_s = 2) must output the clean pattern
delayed by ``delay`` = 4 steps from a corrupted copy of it. Loss: MSE between the (8, 2)
normalised dual-exponential filtering of the output spikes and of the delayed target
(``FilteredMSE``); an all-silent output scores 0.14215, the original reports 0.0042 after 100
epochs.

An epoch is ``repeats`` (100) copies of each pattern, each corrupted afresh (``corrupt``):
with p = 0.4 the input is (p = 0.7) spike-time jittered by ``round(N(0, 1))`` steps and (p = 0.5)
has a 40x40 block or 40 whole channels zeroed (1/2 each); then Bernoulli(``noise_p``) noise spikes
are OR-ed in. The corruption of item ``i`` in epoch ``e`` depends only on ``(seed, e, i)``, so a
resumed run sees the same data. Dev / test are the same patterns with other corruption seeds
(``dev_repeats`` / ``eval_repeats`` copies of each; dev is evaluated after every epoch).
Optimizer AdamW (lr 1e-3, weight decay 0.01, eps 1e-8), MultiStepLR ``[50, 100, 150]`` x 0.1,
batch 32, the last partial batch dropped. ``filter_radius`` (default 0.99; 0 = free, as the
original) keeps the synapses' poles within that radius: free coefficients can leave the stable
region, after which the output explodes and training does not recover (measured: a collapse at
epoch 15, the first synapse 27 % stable). The stable fraction of each synapse is logged per
epoch. The test loss is that of the best dev epoch (lowest ``val_loss``, as the original reports
"best epoch 92"; the model is kept in ``checkpoint/best.keras``) and also given for the final
model. ``reconstructions.png`` shows, for the best-dev model, the corrupted input, the output
spikes and the target of each pattern. The best-dev model's spikes, MACs and energy per test
pattern go to ``report.md`` / ``report.json`` (``tfsnn.activity.write_run_report``).
"""
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfsnn import activity, runs
from tfsnn.data import bundled
from tfsnn.losses import FilteredMSE
from tfsnn.models import iir as iir_models
from tfsnn.training.iir import (FilterStability, check_filter_radius, filter_radius,
                                filter_stability)
from tfsnn.training.schedules import multistep_lr, parse_milestones

DATA_FILE = "associative_target.npy"
DEFAULTS = dict(
    data_path=None, epochs=100, batch_size=32, learning_rate=1e-3, weight_decay=0.01,
    lr_milestones=(50, 100, 150), lr_gamma=0.1, repeats=100, delay=4, noise_p=0.005,
    corrupt_p=0.4, jitter_p=0.7, erase_p=0.5, erase_size=40, tau_m=8.0, tau_s=2.0,
    filter_radius=0.99, seed=0,
    eval_repeats=100, dev_repeats=100, run_dir="logs/associative_memory", resume=False,
    overwrite=False, tensorboard=True, verbose=1, png=True)
IDENTITY_KEYS = ("delay", "tau_m", "tau_s", "filter_radius")  # the model holds the constraint
TEST_SEED_OFFSET, DEV_SEED_OFFSET = 1_000_003, 2_000_003


def data_candidates():
    """Where a user copy of ``associative_target.npy`` is looked for, in order (before the copy
    bundled with tfsnn, ``tfsnn.data.bundled``)."""
    c = []
    if os.environ.get("TFSNN_DATA_DIR"):
        c.append(Path(os.environ["TFSNN_DATA_DIR"]) / "associative-memory" / DATA_FILE)
    c.append(Path("data/associative-memory") / DATA_FILE)
    return c


def load_patterns(path=None):
    """The patterns, float32 ``[10, 300 channels, 300 steps]`` in {0, 1}: from ``path`` if given,
    else the first of ``data_candidates()`` that exists, else the copy bundled with tfsnn."""
    cands = [Path(path)] if path else data_candidates()
    for p in cands:
        if p.is_file():
            a = np.load(p).astype(np.float32)
            if a.ndim != 3 or not np.isin(a, (0.0, 1.0)).all():
                raise runs.ConfigError(f"--data_path {p}: expected binary [patterns, channels, "
                                       f"steps], got {a.shape}")
            return a
    if not path:
        return bundled.associative_memory_patterns()
    raise runs.ConfigError(f"--data_path {path}: associative-memory patterns not found")


def delayed(pattern, delay):
    """``target[:, delay:] = pattern[:, :-delay]`` (time is the last axis)."""
    out = np.zeros_like(pattern)
    out[..., delay:] = pattern[..., :pattern.shape[-1] - delay]
    return out


def corrupt(pattern, rng, c):
    """One corrupted copy of a ``[channels, steps]`` pattern (see the module docstring)."""
    p = pattern.copy()
    n_ch, n_t = p.shape
    if rng.random() < c["corrupt_p"]:
        if rng.random() < c["jitter_p"]:
            ch, t = np.nonzero(p)
            t = np.clip(t + np.round(rng.normal(0.0, 1.0, t.shape)).astype(int), 0, n_t - 1)
            p = np.zeros_like(p)
            p[ch, t] = 1.0  # colliding spikes merge
        if rng.random() < c["erase_p"]:
            e = c["erase_size"]
            if rng.random() < 0.5:  # block; both origin coordinates drawn with the width
                r0, c0 = rng.integers(0, n_t - e + 1, 2)
                p[r0:r0 + e, c0:c0 + e] = 0.0
            else:  # whole input channels
                r0 = rng.integers(0, n_ch - e + 1)
                p[r0:r0 + e, :] = 0.0
    return np.maximum(p, (rng.random(p.shape) < c["noise_p"]).astype(p.dtype))


def make_item(patterns, c, seed, epoch, index):
    """``(input [T, channels], target [T, channels])`` of item ``index`` (pattern index % 10)."""
    k = int(index) % len(patterns)
    rng = np.random.default_rng([int(seed), int(epoch), int(index)])
    x = corrupt(patterns[k], rng, c)
    return x.T.copy(), delayed(patterns[k], c["delay"]).T.copy()


def epoch_maker(patterns, c, seed, repeats, shuffle=True):
    """``epoch -> dataset`` of batches ``([B, T, ch], [B, T, ch])``; order and corruption depend
    only on ``(seed, epoch)``."""
    n = len(patterns) * repeats
    t_, ch = patterns.shape[2], patterns.shape[1]

    def item(epoch, i):
        x, y = make_item(patterns, c, seed, epoch, i)
        return x, y

    def make(epoch):
        idx = tf.range(n, dtype=tf.int64)
        if shuffle:
            idx = tf.random.experimental.stateless_shuffle(
                idx, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        ds = tf.data.Dataset.from_tensor_slices(idx).map(
            lambda i: tf.numpy_function(item, [epoch, i], (tf.float32, tf.float32)))
        ds = ds.map(lambda x, y: (tf.ensure_shape(x, (t_, ch)), tf.ensure_shape(y, (t_, ch))))
        return ds.batch(c["batch_size"], drop_remainder=True)
    return make


def silent_loss(patterns, c):
    """Filtered MSE of an all-silent output against the delayed targets (0.14215 for the data)."""
    y = np.stack([delayed(p, c["delay"]).T for p in patterns])
    loss = FilteredMSE(c["tau_m"], c["tau_s"])
    return float(loss(y, np.zeros_like(y)))


def build_model(c, steps_per_epoch, patterns):
    model = iir_models.associative_memory_net(
        timesteps=patterns.shape[2], channels=patterns.shape[1], tau_m=c["tau_m"],
        tau_s=c["tau_s"], filter_radius=filter_radius(c))
    lr = multistep_lr(c["learning_rate"], c["lr_milestones"], c["lr_gamma"], steps_per_epoch)
    model.compile(optimizer=keras.optimizers.AdamW(lr, weight_decay=c["weight_decay"],
                                                   epsilon=1e-8),
                  loss=FilteredMSE(c["tau_m"], c["tau_s"]))
    return model


def resolve(config):
    c = runs.merge(config, DEFAULTS)
    need = runs.checker(c)
    runs.check_run_options(c)

    runs.check_integers(c, ("repeats", "eval_repeats", "dev_repeats", "erase_size"))
    runs.check_integers(c, ("delay",), minimum=0)
    for flag in ("noise_p", "corrupt_p", "jitter_p", "erase_p"):
        need(0.0 <= c[flag] <= 1.0, flag, "must be a probability in [0, 1]")
    for flag in ("learning_rate", "lr_gamma", "tau_m", "tau_s"):
        need(c[flag] > 0, flag, "must be > 0")
    need(c["weight_decay"] >= 0, "weight_decay", "must be >= 0")
    check_filter_radius(c, need)
    c["lr_milestones"] = parse_milestones(c["lr_milestones"], need)
    need(c["repeats"] * 10 >= c["batch_size"], "batch_size", "exceeds the examples per epoch")
    return c


def save_reconstructions(path, inputs, outputs, targets):
    """PNG grid: per pattern (rows), the corrupted input, the output spikes and the target,
    each ``[T, channels]``, drawn as a raster (channel down, time across)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(inputs)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.4 * n), squeeze=False)
    for i in range(n):
        for j, (img, title) in enumerate(((inputs[i], "corrupted input"),
                                          (outputs[i], "output spikes"),
                                          (targets[i], "target (delayed)"))):
            ax = axes[i, j]
            ch, t = np.nonzero(np.asarray(img).T > 0.5)  # spikes as dots: no aliasing
            ax.scatter(t, ch, s=1.0, c="k", marker="s", linewidths=0)
            ax.set_xlim(-0.5, np.shape(img)[0] - 0.5)
            ax.set_ylim(np.shape(img)[1] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
        axes[i, 0].set_ylabel(f"pattern {i}", fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_reconstructions(model, patterns, c, path):
    """Run ``model`` on one test-corrupted copy of each pattern, save the PNG grid at ``path``
    and return the per-pattern filtered MSE."""
    items = [make_item(patterns, c, c["seed"] + TEST_SEED_OFFSET, 0, k)
             for k in range(len(patterns))]
    x, y = np.stack([i[0] for i in items]), np.stack([i[1] for i in items])
    out = model.predict(x, batch_size=c["batch_size"], verbose=0)
    save_reconstructions(path, x, out, y)
    loss = FilteredMSE(c["tau_m"], c["tau_s"], reduction=None)
    return [float(v) for v in loss(y, out)]


def train(config, patterns=None, callbacks=()):
    """Train per ``config``; returns the results dict also written to ``results.json``.

    ``patterns`` optionally replaces the data file (float ``[P, channels, steps]`` binary).
    """
    c = resolve(config)
    run = runs.RunDir(c["run_dir"])
    with run.lock():
        return _train(c, run, patterns, callbacks)


def _train(c, run, patterns, callbacks):
    if (finished := run.start(c, IDENTITY_KEYS, DEFAULTS)) is not None:
        return finished  # resuming a finished run changes nothing
    patterns = load_patterns(c["data_path"]) if patterns is None else np.asarray(patterns,
                                                                                   np.float32)
    run.prepare(c, IDENTITY_KEYS, c["resume"], c["overwrite"], ("reconstructions.png",),
                defaults=DEFAULTS)
    keras.utils.set_random_seed(c["seed"])
    steps = len(patterns) * c["repeats"] // c["batch_size"]
    dev = epoch_maker(patterns, c, c["seed"] + DEV_SEED_OFFSET, c["dev_repeats"], False)
    test = epoch_maker(patterns, c, c["seed"] + TEST_SEED_OFFSET, c["eval_repeats"], False)
    val_ds = dev(tf.constant(0, tf.int64))
    timer = runs.EpochTimer()
    start = time.perf_counter()
    model = runs.fit(run, lambda: build_model(c, steps, patterns),
                     epoch_maker(patterns, c, c["seed"], c["repeats"]), steps, c["epochs"],
                     c["resume"], val_ds=val_ds, callbacks=[timer, FilterStability(), *callbacks],
                     tensorboard=c["tensorboard"], verbose=c["verbose"], best=("val_loss", "min"),
                     learning_rate=multistep_lr(c["learning_rate"], c["lr_milestones"],
                                                c["lr_gamma"], steps))
    runs.save_final_model(run, model)
    test_ds = test(tf.constant(0, tf.int64))
    last_loss = float(model.evaluate(test_ds, verbose=0))
    best = run.best_epoch()
    best_model = runs.load_model(run.best, "best-epoch checkpoint") if best else model
    results = dict(test_loss=float(best_model.evaluate(test_ds, verbose=0)) if best else last_loss,
                   test_loss_last=last_loss, best_epoch=best and best["epoch"],
                   best_val_loss=best and best["value"], silent_loss=silent_loss(patterns, c),
                   reported_test_loss=0.0042, epochs=c["epochs"],
                   test_examples=len(patterns) * c["eval_repeats"] // c["batch_size"]
                   * c["batch_size"],
                   **timer.summary(),
                   seconds_total=time.perf_counter() - start,
                   filter_stability=filter_stability(model))
    # spikes, MACs (the IIR layers' input is the analog PSP) and energy per test pattern of the
    # best-dev model (report.md / report.json)
    results.update(activity.write_run_report(
        run.path, best_model, test_ds.map(lambda x, y: x),
        {"dataset": "associative_memory", "model": "associative_memory_net"}))
    if c["png"]:
        png = run.path / "reconstructions.png"
        results["pattern_losses"] = write_reconstructions(best_model, patterns, c, png)
        results["reconstructions_png"] = str(png)
    return runs.save_results(run, results)


def summary_line(c, results):
    return (f"final: method=associative_memory test_loss={results['test_loss']:.5f} "
            f"(best dev epoch {results['best_epoch']}; final model "
            f"{results['test_loss_last']:.5f}; all-silent {results['silent_loss']:.5f}, "
            f"original 0.0042) epochs={results['epochs']} run_dir={c['run_dir']}")

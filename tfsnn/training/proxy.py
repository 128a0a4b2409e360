"""Proxy learning (Kheradpisheh et al.; docs/specs/iir_and_proxy.md Part B, §C.3): ``train(config)``.

The IF SNN and the ReLU ANN share every kernel and BatchNorm gamma/beta (``ProxyNet``); the
SNN's output spike counts replace the ANN's output in ``L = mean((o - k one_hot(y))^2)``
(``k = target_spikes``, 1 in the notebook) and the error is backpropagated through the ANN.
BatchNorm statistics are separate per branch, trained in epoch 0 and frozen from epoch
``freeze_bn_after`` on (``FreezeBatchNorm``); gamma/beta keep training. Adam(lr 1e-4, betas
(0.8, 0.99), eps 1e-8) plus PyTorch's coupled L2 (``weight_decay`` 1e-6 added to the gradient),
constant lr (``lr_milestones``: x ``lr_gamma`` at those epochs, not in the recipe), batch 100
(last partial batch dropped), train augmentation RandomCrop(26) + Pad(1), pixels ``/255``
(the dataset record's ``proxy`` preprocessing). Each epoch's test evaluation is the history's
``val_*`` columns (the notebook's per-epoch test curve); ``strict_accuracy`` (ties wrong) is the
headline metric, ``argmax_accuracy`` (first index wins) and ``lenient_accuracy`` (ties right,
the notebook's "Final Result") are reported beside it.

``width`` scales every layer (128 = the paper's Fashion-MNIST network, 19.6 M parameters).
The final model's spikes, SOPs and energy per test image go to ``report.md`` / ``report.json``
(``tfsnn.activity.write_run_report``).
"""
import time

import keras
import numpy as np

from tfsnn import activity, data, metrics, runs
from tfsnn.data.preprocessing import proxy_augment, proxy_crop_pad
from tfsnn.models.proxy import proxy_fashion_mnist
from tfsnn.training import distribute
from tfsnn.training.schedules import multistep_lr, parse_milestones

DEFAULTS = dict(
    dataset="fashion_mnist", width=128, timesteps=15, threshold=2.0, epochs=100, batch_size=100,
    learning_rate=1e-4, beta_1=0.8, beta_2=0.99, epsilon=1e-8, weight_decay=1e-6,
    freeze_bn_after=1, augment=True, rate_target=False, target_spikes=1.0, lr_milestones=(),
    lr_gamma=0.1, max_train_examples=0, max_test_examples=0, seed=2020, run_dir=None,
    resume=False, overwrite=False, strategy="default", tensorboard=True, verbose=1)
IDENTITY_KEYS = ("dataset", "width", "timesteps", "threshold", "rate_target", "target_spikes")
augment = proxy_augment  # RandomCrop(26) + Pad(1) of float images [B, 28, 28, C]


class FreezeBatchNorm(keras.callbacks.Callback):
    """Sets ``ProxyNet.bn_update`` at each epoch start: 1 (BN training mode) before
    ``after_epochs``, 0 (statistics frozen) from then on; right on resumed runs too."""

    def __init__(self, after_epochs=1):
        super().__init__()
        self.after_epochs = int(after_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.bn_update.assign(1.0 if epoch < self.after_epochs else 0.0)


def resolve(config):
    """Fill defaults and ``run_dir`` and validate; ``runs.ConfigError`` names the bad flag."""
    c = runs.merge(config, DEFAULTS)
    need = runs.checker(c)
    runs.check_run_options(c)

    need(c["dataset"] in data.names("proxy"), "dataset",
         f"must be one of {', '.join(data.names('proxy'))}")
    runs.check_integers(c, ("width", "timesteps"))
    for flag in ("threshold", "learning_rate", "epsilon"):
        need(c[flag] > 0, flag, "must be > 0")
    for flag in ("beta_1", "beta_2"):
        need(0.0 <= c[flag] < 1.0, flag, "must be in [0, 1)")
    need(c["weight_decay"] >= 0, "weight_decay", "must be >= 0")
    need(c["lr_gamma"] > 0, "lr_gamma", "must be > 0")
    c["lr_milestones"] = parse_milestones(c["lr_milestones"], need)
    need(0 < c["target_spikes"] <= c["timesteps"], "target_spikes",
         f"must be in (0, --timesteps={c['timesteps']}] (output spikes the true class aims at)")
    need(not (c["rate_target"] and c["target_spikes"] != 1), "target_spikes",
         "--rate_target already sets the target (o/T against the one-hot); leave it at 1")
    need(int(c["freeze_bn_after"]) == c["freeze_bn_after"] and c["freeze_bn_after"] >= 0,
         "freeze_bn_after", "must be an integer >= 0 (epochs of BN training)")
    c["run_dir"] = c["run_dir"] or f"logs/proxy_{c['dataset']}_w{c['width']}_T{c['timesteps']}"
    return c


def epoch_maker(x, y, c):
    """``epoch -> dataset`` of augmented batches; order and crops depend only on (seed, epoch)."""
    seed = c["seed"]

    def preprocess(images, i, epoch):
        img = data.preprocess(c["dataset"], images, True, "proxy")
        return proxy_crop_pad(img, i, epoch, seed) if c["augment"] else img
    return data.epoch_maker(x, y, c["batch_size"], seed, preprocess, drop_remainder=True,
                            with_indices=True)


def learning_rate(c, steps_per_epoch):
    """Constant ``learning_rate`` (the recipe's), or ``x lr_gamma`` at each ``lr_milestones``
    epoch."""
    return multistep_lr(c["learning_rate"], c["lr_milestones"], c["lr_gamma"], steps_per_epoch)


def build_model(c, steps_per_epoch=1):
    model = proxy_fashion_mnist(
        width=c["width"], timesteps=c["timesteps"], threshold=c["threshold"],
        weight_decay=c["weight_decay"], rate_target=c["rate_target"],
        target_spikes=c["target_spikes"])
    model.compile(optimizer=keras.optimizers.Adam(
        learning_rate(c, steps_per_epoch), beta_1=c["beta_1"], beta_2=c["beta_2"],
        epsilon=c["epsilon"]))
    return model


def train(config, arrays=None, callbacks=()):
    """Train per ``config``; returns the results dict also written to ``results.json``.

    ``arrays`` optionally replaces the loader: ``((x_train, y_train), (x_test, y_test))`` uint8
    images ``[N, 28, 28, 1]`` and int labels.
    """
    c = resolve(config)
    strategy = distribute.get_strategy(c["strategy"])  # first: TF_CONFIG's cluster starts here
    run = runs.RunDir(distribute.worker_run_dir(c["run_dir"], strategy))
    with run.lock():
        return _train(c, run, arrays, callbacks, strategy)


def _train(c, run, arrays, callbacks, strategy):
    if (finished := run.start(c, IDENTITY_KEYS, DEFAULTS)) is not None:
        return finished  # resuming a finished run changes nothing
    (xtr, ytr), (xte, yte) = arrays or data.load(c["dataset"])
    if c["max_train_examples"]:
        xtr, ytr = xtr[:c["max_train_examples"]], ytr[:c["max_train_examples"]]
    if c["max_test_examples"]:
        xte, yte = xte[:c["max_test_examples"]], yte[:c["max_test_examples"]]
    if not arrays:
        runs.check_split({**c, "validation_examples": 0}, ((xtr, ytr), None, (xte, yte)))
    steps = len(xtr) // c["batch_size"]
    if steps < 1:
        raise runs.ConfigError(f"--batch_size={c['batch_size']}: larger than the {len(xtr)} "
                               "training images")
    run.prepare(c, IDENTITY_KEYS, c["resume"], c["overwrite"], defaults=DEFAULTS)
    keras.utils.set_random_seed(c["seed"])
    test_ds = data.batches(xte, yte, c["batch_size"],
                           lambda b: data.preprocess(c["dataset"], b, False, "proxy"))
    timer = runs.EpochTimer()
    start = time.perf_counter()
    model = runs.fit(run, lambda: build_model(c, steps), epoch_maker(xtr, ytr, c), steps,
                     c["epochs"], c["resume"], val_ds=test_ds, strategy=strategy,
                     callbacks=[FreezeBatchNorm(c["freeze_bn_after"]), timer, *callbacks],
                     tensorboard=c["tensorboard"], verbose=c["verbose"],
                     learning_rate=learning_rate(c, steps))
    runs.save_final_model(run, model)
    hist = runs.read_history(run.history)
    results = dict(
        **test_scores(model, test_ds, yte, c["batch_size"]),
        test_examples=int(len(xte)), train_examples=int(steps * c["batch_size"]),
        epochs=c["epochs"], width=c["width"], timesteps=c["timesteps"],
        epoch_curve={k: hist[k] for k in ("strict_accuracy", "val_strict_accuracy",
                                          "val_argmax_accuracy", "val_lenient_accuracy",
                                          "loss", "val_loss") if k in hist},
        **timer.summary(),
        seconds_total=time.perf_counter() - start)
    # spikes, SOPs (conv1: MACs of the image) and energy per inference on the test split
    # (report.md / report.json)
    results.update(activity.write_run_report(run.path, model, test_ds, {
        "dataset": c["dataset"], "model": f"proxy_w{c['width']}"}))
    return runs.save_results(run, results)


def test_scores(model, ds, labels, batch_size):
    """``test_{strict,argmax,lenient}_accuracy``, ``test_loss`` and ``test_ties``
    (``metrics.tie_breakdown``) of a ``ProxyNet`` on ``ds`` (batches of ``batch_size``, the
    images of ``labels`` in order) from one SNN pass (``predict``); the values
    ``model.evaluate(ds)`` gives (its loss: the mean of the per-batch proxy losses)."""
    counts = model.predict(ds, verbose=0)
    labels = np.asarray(labels).reshape(-1)
    if len(counts) != len(labels):
        raise ValueError(f"{len(counts)} predictions for {len(labels)} labels")
    losses = [float(model.proxy_loss(labels[i:i + batch_size], counts[i:i + batch_size]))
              for i in range(0, len(labels), batch_size)]
    scores = {f"test_{fn.__name__}": float(np.mean(fn(labels, counts))) for fn in (
        metrics.strict_accuracy, metrics.argmax_accuracy, metrics.lenient_accuracy)}
    return {**scores, "test_loss": float(np.mean(losses)),
            "test_ties": metrics.tie_breakdown(labels, counts)}


def summary_line(c, results):
    spe = results.get("seconds_per_epoch")
    return (f"final: method=proxy dataset={c['dataset']} width={c['width']} T={c['timesteps']} "
            f"test_strict_accuracy={results['test_strict_accuracy']:.4f} (argmax "
            f"{results['test_argmax_accuracy']:.4f}, lenient "
            f"{results['test_lenient_accuracy']:.4f})"
            f" epochs={results['epochs']}" + (f" time/epoch={spe:.1f}s" if spe else "")
            + f" run_dir={c['run_dir']}")

"""Direct training of the IIR-synapse SNNs (docs/specs/iir_and_proxy.md §A.3-§A.5): ``train(config)``.

``config`` is a dict with the keys of ``DEFAULTS`` (the ``--method iir`` flags of
``scripts/train_snn.py``). Data: ``tfsnn.data.load(dataset)``, pixels ``/255`` (no
normalisation; the dataset record's ``iir`` preprocessing; the record also names the default
model); the last ``validation_examples`` training images are the dev split. Loss: softmax
cross-entropy on the output spike counts; accuracy: ``argmax`` of the counts (first index wins
ties). Adam (eps 1e-8) with a MultiStepLR schedule (``lr_milestones`` in epochs, factor
``lr_gamma``). ``state="carry"`` keeps the neuron / filter states across minibatches (fixed batch
size: every split drops its last partial batch). The test split is evaluated with the final
model of the best dev epoch (highest ``val_accuracy``, as upstream reports it; kept in
``checkpoint/best.keras``) and with the final model; without a dev split, with the final model.
``filter_radius`` (default 0.99) keeps every synapse's poles within that radius
(``tfsnn.layers.filters``; 0 trains the coefficients freely, as upstream); the fraction of stable
filters of each synapse is logged per epoch (``stable_<layer>`` in ``history.csv``). The tested
model's spikes, MACs and energy per test image go to ``report.md`` / ``report.json``
(``tfsnn.activity.write_run_report``).
"""
import math
import time

import keras

from tfsnn import activity, data, runs
from tfsnn.models import iir as iir_models
from tfsnn.layers.filters import DualExpIIR, FirstOrderLowPass
from tfsnn.training.schedules import multistep_lr, parse_milestones
from tfsnn.training import distribute

DEFAULTS = dict(
    model=None, dataset="fashion_mnist", encoding="copy", timesteps=25, state="zero",
    tau_m=4.0, tau_s=1.0, dropout=0.3, epochs=100, batch_size=64, learning_rate=1e-4,
    lr_milestones=(50, 100), lr_gamma=0.1, filter_radius=0.99, validation_examples=10000,
    max_train_examples=0, max_test_examples=0, seed=2, run_dir=None, resume=False,
    overwrite=False, strategy="default", tensorboard=True, verbose=1)
IDENTITY_KEYS = ("model", "dataset", "encoding", "timesteps", "state", "tau_m", "tau_s",
                 "filter_radius")  # the saved model holds its constraint


def resolve(config):
    """Fill defaults and ``run_dir`` and validate; ``runs.ConfigError`` names the bad flag."""
    c = runs.merge(config, DEFAULTS)
    need = runs.checker(c)
    runs.check_run_options(c)

    need(c["dataset"] in data.names("iir"), "dataset",
         f"must be one of {', '.join(data.names('iir'))}")
    c["model"] = c["model"] or data.get(c["dataset"]).models.get("iir")  # snn_mlp_1
    need(c["model"] in iir_models.IIR_MODELS, "model",
         f"must be one of {', '.join(iir_models.IIR_MODELS)}")
    need(c["encoding"] in iir_models.ENCODINGS, "encoding",
         f"must be one of {', '.join(iir_models.ENCODINGS)}")
    need(c["state"] in ("zero", "carry"), "state", "must be zero or carry")
    runs.check_integers(c, ("timesteps",))
    for flag in ("tau_m", "tau_s", "learning_rate", "lr_gamma"):
        need(c[flag] > 0, flag, "must be > 0")
    need(c["tau_m"] != c["tau_s"], "tau_s", "must differ from --tau_m")
    need(0.0 <= c["dropout"] < 1.0, "dropout", "must be in [0, 1)")
    check_filter_radius(c, need)
    c["lr_milestones"] = parse_milestones(c["lr_milestones"], need)
    c["run_dir"] = c["run_dir"] or (
        f"logs/iir_{c['model']}_{c['dataset']}_{c['encoding']}_{c['state']}")
    return c


def check_filter_radius(c, need):
    """``--filter_radius``: 0 (free coefficients) or above the initial poles and below 1."""
    r, pole = c["filter_radius"], math.exp(-1.0 / max(c["tau_m"], c["tau_s"]))
    need(r == 0 or pole <= r < 1, "filter_radius",
         f"must be 0 (unconstrained) or in [{pole:.4f}, 1) (the initial pole exp(-1/tau) and 1)")


def filter_radius(c):
    """The layers' ``max_radius`` of a config (None for 0)."""
    return c["filter_radius"] or None


def epoch_maker(x, y, batch_size, seed, drop_remainder, dataset=DEFAULTS["dataset"]):
    """``epoch -> dataset`` with a permutation that depends only on (seed, epoch); pixels
    preprocessed per ``dataset``'s record (``/255``, ``tfsnn.data.preprocessing.to_float``)."""
    return data.epoch_maker(x, y, batch_size, seed,
                            lambda b: data.preprocess(dataset, b, True, "iir"), drop_remainder)


def eval_dataset(x, y, batch_size, drop_remainder=False, dataset=DEFAULTS["dataset"]):
    return data.batches(x, y, batch_size, lambda b: data.preprocess(dataset, b, False, "iir"),
                        drop_remainder)


def learning_rate(c, steps_per_epoch):
    """MultiStepLR of a config (``lr_milestones`` in epochs, factor ``lr_gamma``)."""
    return multistep_lr(c["learning_rate"], c["lr_milestones"], c["lr_gamma"], steps_per_epoch)


def build_model(c, steps_per_epoch):
    """The compiled IIR model of a config."""
    model = iir_models.iir_model(
        c["model"], timesteps=c["timesteps"], encoding=c["encoding"], tau_m=c["tau_m"],
        tau_s=c["tau_s"], dropout=c["dropout"], state=c["state"],
        batch_size=c["batch_size"] if c["state"] == "carry" else None,
        filter_radius=filter_radius(c))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(c, steps_per_epoch), epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def filter_stability(model):
    """``{layer name: fraction of stable per-element filters}`` of the IIR synapses."""
    return {l.name: float(l.stability()) for l in model.layers
            if isinstance(l, (DualExpIIR, FirstOrderLowPass))}


class FilterStability(keras.callbacks.Callback):
    """Adds ``stable_<layer>`` (``filter_stability``) to each epoch's logs, hence to
    ``history.csv`` and TensorBoard (pass it before the loggers: ``runs.fit`` does)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({f"stable_{k}": v for k, v in filter_stability(self.model).items()})


def train(config, arrays=None, callbacks=()):
    """Train per ``config``; returns the results dict also written to ``results.json``.

    ``arrays`` optionally replaces the loader: ``(train, val_or_None, test)`` tuples of
    ``(uint8 images [N, 28, 28, 1], int labels [N])``.
    """
    c = resolve(config)
    strategy = distribute.get_strategy(c["strategy"])  # first: TF_CONFIG's cluster starts here
    run = runs.RunDir(distribute.worker_run_dir(c["run_dir"], strategy))
    with run.lock():
        return _train(c, run, arrays, callbacks, strategy)


def _train(c, run, arrays, callbacks, strategy):
    if (finished := run.start(c, IDENTITY_KEYS, DEFAULTS)) is not None:
        return finished  # resuming a finished run changes nothing
    (xtr, ytr), val, (xte, yte) = arrays or runs.check_split(c, data.split_run(c))
    drop = c["state"] == "carry"
    bs = c["batch_size"]
    steps = len(xtr) // bs if drop else runs.steps_for(len(xtr), bs)
    if steps < 1:
        raise runs.ConfigError(f"--batch_size={bs}: larger than the {len(xtr)} training images")
    if drop and (len(xte) < bs or (val is not None and len(val[0]) < bs)):
        raise runs.ConfigError(f"--batch_size={bs}: --state=carry needs at least one full batch "
                               "in the dev and test splits")
    run.prepare(c, IDENTITY_KEYS, c["resume"], c["overwrite"], defaults=DEFAULTS)
    keras.utils.set_random_seed(c["seed"])
    val_ds = None if val is None else eval_dataset(*val, bs, drop, c["dataset"])
    timer = runs.EpochTimer()
    start = time.perf_counter()
    model = runs.fit(run, lambda: build_model(c, steps),
                     epoch_maker(xtr, ytr, bs, c["seed"], drop, c["dataset"]), steps,
                     c["epochs"], c["resume"],
                     val_ds=val_ds, strategy=strategy,
                     callbacks=[timer, FilterStability(), *callbacks],
                     tensorboard=c["tensorboard"], verbose=c["verbose"],
                     best=None if val is None else ("val_accuracy", "max"),
                     learning_rate=learning_rate(c, steps))
    runs.save_final_model(run, model)
    test_ds = eval_dataset(xte, yte, bs, drop, c["dataset"])
    loss, acc = model.evaluate(test_ds, verbose=0)
    best = run.best_epoch() if val is not None else None
    chosen, tested = {}, model
    if best is not None:
        with strategy.scope():
            tested = runs.load_model(run.best, "best-epoch checkpoint")
        chosen = dict(best_epoch=best["epoch"], best_val_accuracy=best["value"],
                      test_accuracy_last=float(acc), test_loss_last=float(loss))
        loss, acc = tested.evaluate(test_ds, verbose=0)
    results = dict(
        test_accuracy=float(acc), test_loss=float(loss), **chosen,
        test_examples=int(len(xte) // bs * bs if drop else len(xte)),
        train_examples=int(len(xtr)), epochs=c["epochs"], model=c["model"],
        dataset=c["dataset"], encoding=c["encoding"], state=c["state"],
        **timer.summary(),
        seconds_total=time.perf_counter() - start, filter_stability=filter_stability(model))
    # spikes, MACs (the IIR layers' input is the analog PSP) and energy per inference of the
    # tested model on the test split (report.md / report.json)
    results.update(activity.write_run_report(run.path, tested, test_ds, {
        "dataset": c["dataset"], "model": c["model"], "encoding": c["encoding"]}))
    return runs.save_results(run, results)


def summary_line(c, results):
    """One-line final summary for a script."""
    spe = results.get("seconds_per_epoch")
    return (f"final: method=iir model={c['model']} dataset={c['dataset']} "
            f"encoding={c['encoding']} state={c['state']} test_accuracy="
            f"{results['test_accuracy']:.4f} epochs={results['epochs']}"
            + (f" time/epoch={spe:.1f}s" if spe else "") + f" run_dir={c['run_dir']}")

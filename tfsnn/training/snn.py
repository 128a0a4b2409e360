"""Direct SNN training runs behind ``scripts/train_snn.py``: ``--method spike_bp`` (Lee et al.,
from scratch) or ``--method hybrid`` (Rathi et al.: ANN -> threshold balancing -> STDB
fine-tuning). Run-dir, checkpoint, resume, TensorBoard and error conventions are
``tfsnn.runs``'s (shared with ``train_quant.py``); ``strategy="multi_worker"`` trains on the
``TF_CONFIG`` cluster (``tfsnn.training.distribute``: one run dir per worker).

``train(config, arrays=None)``; ``config`` has the keys of ``DEFAULTS`` (the script's flags).
Extra files in the run dir for ``hybrid``: ``ann.keras`` (the trained ANN, reused on restart)
and ``conversion.json`` (thresholds and accuracies before fine-tuning). ``fine_tune_examples``
limits STDB fine-tuning to the first N training images while the ANN trains on all of them
(a CPU-sized recipe: a fine-tuning epoch costs T times an ANN epoch and more).

Datasets, default models and preprocessing come from the dataset's ``tfsnn.data`` record
(``tfsnn.data.preprocessing.snn_mnist`` / ``snn_cifar10``): MNIST / Fashion-MNIST ``pixels / 255``
in [0, 1]; CIFAR-10 ``pixels / 127.5 - 1`` in [-1, 1] (Rathi's normalisation; ``|x|`` is a valid
spike rate) with random crop (pad 4) and horizontal flip when training.
"""
import json
import time

import keras

from tfsnn import activity, data, runs
from tfsnn.models import spiking as snn_models
from tfsnn.conversion import balancing
from tfsnn.training import distribute, hybrid, spike_bp
from tfsnn.training.schedules import step_decay

METHODS = ("spike_bp", "hybrid")
DEFAULTS = dict(
    method="spike_bp", model=None, dataset="fashion_mnist", timesteps=100, epochs=5,
    batch_size=32, learning_rate=None, resume=False, overwrite=False, run_dir=None,
    max_train_examples=0, max_test_examples=0, validation_examples=5000, seed=0,
    strategy="default", tensorboard=True, verbose=1, leak=None, surrogate=None, fc_widths=None,
    ann_epochs=10, ann_learning_rate=1e-2, scaling_factor=0.7, balance_examples=512,
    balance_timesteps=None, weight_decay=5e-4, encoding=None, optimizer=None,
    fine_tune_examples=0, dropout=None, divide_by_time=False, jit_compile=False)
IDENTITY_KEYS = ("method", "model", "dataset", "timesteps", "leak", "surrogate", "fc_widths",
                 "encoding", "scaling_factor", "ann_epochs", "ann_learning_rate",
                 "balance_examples", "balance_timesteps", "optimizer")  # ann.keras and the conversion are reused on restart
EXTRAS = ("ann.keras", "conversion.json")
# Input encodings (None: the method's Poisson encoder; "direct": the analog image every step).
ENCODINGS = (None, "poisson", "direct")
DEFAULT_LR = {"spike_bp": {"spike_bp_lenet": 0.0085, "spike_bp_vgg9": 0.0033,
                           "resnet11": 0.0025}, "hybrid": {}}
ADAM_LR = 1e-3  # spike_bp with --optimizer adam


def default_run_dir(c):
    return f"logs/snn_{c['method']}_{c['model']}_{c['dataset']}_T{c['timesteps']}"


def resolve(config):
    """Fill defaults and derived keys and validate every value (``runs.ConfigError``)."""
    c = runs.merge(config, DEFAULTS)
    need = runs.checker(c)

    need(c["method"] in METHODS, "method", f"must be one of {', '.join(METHODS)}")
    need(c["dataset"] in data.names(c["method"]), "dataset",
         f"must be one of {', '.join(data.names(c['method']))}")
    c["model"] = c["model"] or data.get(c["dataset"]).models.get(c["method"])
    need(c["model"] in snn_models.names(), "model",
         f"must be one of {', '.join(snn_models.names())}")
    need(c["method"] != "hybrid" or snn_models.FAMILY[c["model"]] == "rathi", "model",
         "hybrid conversion needs a Rathi architecture (vgg5/9/11/13/16, resnet12/20/34)")
    runs.check_run_options(c)
    runs.check_integers(c, ("timesteps", "balance_examples"))
    need(c["ann_epochs"] >= 0, "ann_epochs", "must be >= 0")
    runs.check_integers(c, ("fine_tune_examples",), minimum=0)
    need(not c["fine_tune_examples"] or c["method"] == "hybrid", "fine_tune_examples",
         "is a hybrid option (spike_bp trains on the whole split; see --max_train_examples)")
    need(not c["divide_by_time"] or c["method"] == "hybrid", "divide_by_time",
         "is a hybrid option (spike_bp's readout is Lee's leaky mean)")
    need(not c["jit_compile"] or c["strategy"] == "default", "jit_compile",
         "(XLA for the whole train step) does not work with --strategy mirrored / multi_worker")
    if c["learning_rate"] is None and c["optimizer"] == "adam" and c["method"] == "spike_bp":
        c["learning_rate"] = ADAM_LR
    if c["learning_rate"] is None:
        c["learning_rate"] = DEFAULT_LR[c["method"]].get(
            c["model"], 1e-4 if c["method"] == "hybrid" else 0.0033)
    for flag in ("learning_rate", "ann_learning_rate", "scaling_factor"):
        need(c[flag] > 0, flag, "must be > 0")
    need(c["weight_decay"] >= 0, "weight_decay", "must be >= 0")
    if c["method"] == "spike_bp":
        c["optimizer"] = c["optimizer"] or "sgd"
    names = (spike_bp if c["method"] == "spike_bp" else hybrid).OPTIMIZERS
    need(c["optimizer"] is None or c["optimizer"] in names, "optimizer",
         f"must be one of {', '.join(names)}")
    need(c["leak"] is None or 0 < c["leak"] <= 1, "leak", "must be in (0, 1]")
    need(c["dropout"] is None or 0 <= c["dropout"] < 1, "dropout", "must be in [0, 1)")
    need(c["encoding"] in ENCODINGS, "encoding",
         f"must be one of {', '.join(e for e in ENCODINGS if e)} (unset: poisson)")
    if c["surrogate"] is not None:
        from tfsnn import surrogates
        need(c["surrogate"] in surrogates.names(), "surrogate",
             f"must be one of {', '.join(surrogates.names())}")
    need(c["balance_timesteps"] is None or c["balance_timesteps"] >= 1, "balance_timesteps",
         "must be >= 1")
    if c["fc_widths"] is not None:
        c["fc_widths"] = [int(w) for w in c["fc_widths"]]
        need(all(w >= 1 for w in c["fc_widths"]), "fc_widths", "widths must be >= 1")
    c["run_dir"] = c["run_dir"] or default_run_dir(c)
    return c


# ------------------------------------------------------------------ data

def preprocess(c, images, training):
    """uint8 ``[B, H, W, C]`` -> float32 per ``c``'s dataset record and method."""
    return data.preprocess(c["dataset"], images, training, c["method"])


def epoch_maker(c, x, y, batch_size, seed):
    """``epoch -> dataset`` whose order depends only on (seed, epoch) (exact resume)."""
    return data.epoch_maker(x, y, batch_size, seed, lambda b: preprocess(c, b, True))


def eval_ds(c, x, y, batch_size):
    return data.batches(x, y, batch_size, lambda b: preprocess(c, b, False))


# ------------------------------------------------------------------ models

def _encoder(c):
    if c["encoding"] == "direct":
        return "direct"
    if c["method"] == "hybrid":
        return "signed_poisson"
    signed = (data.get(c["dataset"]).value_range(c["method"]) or (0.0,))[0] < 0
    return "signed_poisson_strict" if signed else "poisson_half"


def make_snn(c, num_classes, shape):
    kw = {"surrogate": c["surrogate"]} if c["surrogate"] else None
    return snn_models.snn(c["model"], c["timesteps"], num_classes, shape, encoder=_encoder(c),
                          leak=c["leak"], neuron_kwargs=kw, fc_widths=c["fc_widths"],
                          dropout=c["dropout"], divide_by_time=c["divide_by_time"])


def train_ann(c, run, train, num_classes, shape, strategy_steps):
    """Hybrid stage 1: the bias-free ReLU ANN (SGD 0.9, coupled L2); reused from ``ann.keras``."""
    path = run.path / "ann.keras"
    if path.is_file():
        return keras.models.load_model(path)
    ann = snn_models.ann(c["model"], num_classes, shape, fc_widths=c["fc_widths"])
    hybrid.add_coupled_weight_decay(ann, c["weight_decay"])
    lr = step_decay(c["ann_learning_rate"], max(c["ann_epochs"], 1), strategy_steps)
    ann.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=False)
    if c["ann_epochs"]:
        ann.fit(runs.epoch_dataset(epoch_maker(c, *train, c["batch_size"],
                                               c["seed"] + 1), 0, c["ann_epochs"]),
                epochs=c["ann_epochs"], steps_per_epoch=strategy_steps, shuffle=False,
                verbose=c["verbose"])
    runs.atomic_save_model(ann, path)
    return ann


def learning_rate(c, steps):
    """The step-decay schedule of a config over its ``epochs`` (spike_bp: x0.2 at 47/67/83 %;
    hybrid: x0.1 at 60/80/90 %)."""
    if c["method"] == "spike_bp":
        return step_decay(c["learning_rate"], c["epochs"], steps, reduce=5.0,
                          at=(0.47, 0.67, 0.83))
    return step_decay(c["learning_rate"], c["epochs"], steps)


def fine_tune_split(c, train):
    """The ``(images, labels)`` the SNN trains on: hybrid's first ``fine_tune_examples``
    training images (0: all; never more than the split holds), else ``train`` itself."""
    n = c["fine_tune_examples"]
    if not n:
        return train
    if n > len(train[0]):
        raise runs.ConfigError(f"--fine_tune_examples={n}: the training split has only "
                               f"{len(train[0])} images")
    return train[0][:n], train[1][:n]


def build(c, run, train, test, steps):
    """The compiled SNN at epoch 0 (for hybrid: ANN training on all of ``train`` + conversion
    first); ``steps``: SNN training steps per epoch (the learning-rate schedule's)."""
    num_classes = data.get(c["dataset"]).classes
    shape = data.input_shape(c["dataset"], c["method"])
    snn = make_snn(c, num_classes, shape)
    if c["method"] == "spike_bp":
        return spike_bp.compile_spike_bp(snn, learning_rate(c, steps), c["weight_decay"],
                                         optimizer=c["optimizer"], jit_compile=c["jit_compile"])
    ann = train_ann(c, run, train, num_classes, shape,
                    runs.steps_for(len(train[0]), c["batch_size"]))
    images = preprocess(c, train[0][:c["balance_examples"]], False)
    found = balancing.convert(ann, snn, images=images, scale=c["scaling_factor"],
                           timesteps=c["balance_timesteps"] or c["timesteps"],
                           batch_size=c["batch_size"], seed=(c["seed"], 7))
    hybrid.compile_for_fine_tuning(snn, learning_rate(c, steps), c["weight_decay"],
                                   optimizer=c["optimizer"], jit_compile=c["jit_compile"])
    ann_acc = ann.evaluate(eval_ds(c, *test, c["batch_size"]), verbose=0)[1]
    snn_acc = snn.evaluate(eval_ds(c, *test, c["batch_size"]), verbose=0)[1]
    runs.atomic_write_json(run.path / "conversion.json", dict(
        thresholds_unscaled=found, scaling_factor=c["scaling_factor"],
        ann_test_accuracy=float(ann_acc), converted_test_accuracy=float(snn_acc)))
    return snn


def train(config, arrays=None):
    """Train per ``config``; returns the results dict also written to ``results.json``.

    ``arrays``: optional ``(train, val_or_None, test)`` tuples of ``(uint8 images, labels)``
    replacing the dataset loader.
    """
    c = resolve(config)
    strategy = distribute.get_strategy(c["strategy"])  # first: TF_CONFIG's cluster starts here
    run = runs.RunDir(distribute.worker_run_dir(c["run_dir"], strategy))
    with run.lock():
        return _train(c, run, arrays, strategy)


def _train(c, run, arrays, strategy):
    if (finished := run.start(c, IDENTITY_KEYS, DEFAULTS)) is not None:
        return finished  # resuming a finished run changes nothing
    train_, val, test = arrays or runs.check_split(c, data.split_run(c))
    tune = fine_tune_split(c, train_)  # refuses too many images before the run dir is touched
    run.prepare(c, IDENTITY_KEYS, c["resume"], c["overwrite"], EXTRAS,
                defaults=DEFAULTS)
    keras.utils.set_random_seed(c["seed"])
    steps = runs.steps_for(len(tune[0]), c["batch_size"])
    val_ds = None if val is None else eval_ds(c, *val, c["batch_size"])
    timer = runs.EpochTimer()
    start = time.perf_counter()
    model = runs.fit(run, lambda: build(c, run, train_, test, steps),
                     epoch_maker(c, *tune, c["batch_size"], c["seed"]), steps,
                     c["epochs"], c["resume"], val_ds=val_ds, strategy=strategy,
                     callbacks=[timer], tensorboard=c["tensorboard"], verbose=c["verbose"],
                     learning_rate=learning_rate(c, steps), jit_compile=c["jit_compile"])
    runs.save_final_model(run, model)
    loss, acc = model.evaluate(eval_ds(c, *test, c["batch_size"]), verbose=0)
    results = dict(test_accuracy=float(acc), test_loss=float(loss),
                   test_examples=int(len(test[0])), train_examples=int(len(tune[0])),
                   epochs=c["epochs"], method=c["method"], model=c["model"],
                   timesteps=c["timesteps"], seconds_total=time.perf_counter() - start,
                   **timer.summary())
    # spikes, SOPs and energy per inference on the test split (report.md / report.json)
    results.update(activity.write_run_report(run.path, model, eval_ds(c, *test, c["batch_size"]),
                                             {"dataset": c["dataset"], "model": c["model"]}))
    if c["method"] == "hybrid":  # before fine-tuning, from conversion.json
        conv = json.loads((run.path / "conversion.json").read_text())
        results.update(ann_test_accuracy=conv["ann_test_accuracy"],
                       converted_test_accuracy=conv["converted_test_accuracy"])
    return runs.save_results(run, results)


def summary_line(c, results):
    spe = results.get("seconds_per_epoch")
    per_epoch = f"time/epoch={spe:.1f}s " if spe else ""
    before = (f"(ANN {results['ann_test_accuracy']:.4f}, converted before fine-tuning "
              f"{results['converted_test_accuracy']:.4f}) " if "ann_test_accuracy" in results
              else "")
    return (f"final: method={c['method']} dataset={c['dataset']} model={c['model']} "
            f"T={c['timesteps']} test_accuracy={results['test_accuracy']:.4f} {before}epochs="
            f"{results['epochs']} {per_epoch}run_dir={c['run_dir']}")

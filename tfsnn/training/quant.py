"""Quantization-aware training of the ALL_INT_SNN ANN (the main job's first step).

``train(config)`` and ``infer(config)`` carry out ``scripts/train_quant.py``; ``config`` is a
dict with the keys of ``DEFAULTS`` (the script's flags). See the README for the flags.
"""
import time

import keras
import numpy as np

from tfsnn import data, runs
from tfsnn.models import all_int as models
from tfsnn.models import zoo
from tfsnn.accounting import all_int_probes
from tfsnn.viz.tensorboard import SpikeActivity
from tfsnn.training import distribute

DEFAULTS = dict(
    k=0, mode="training", use_ternary=True, dataset="fashion_mnist", full_precision=False,
    epochs=5, batch_size=200, learning_rate=1e-3, lr_schedule="cosine", resume=False,
    overwrite=False, run_dir=None, max_train_examples=0, max_test_examples=0,
    validation_examples=5000, seed=0, strategy="default", tensorboard=True, verbose=1,
    qat_backend="tfsnn")
# Keys that define what a run directory holds; a restart must not change them.
IDENTITY_KEYS = ("k", "use_ternary", "dataset", "model", "full_precision", "qat_backend")
MODES = ("training", "inference")
SPIKE_SAMPLE = 32  # test images whose SNN activity is logged to TensorBoard every epoch
SCHEDULES = ("constant", "cosine")
BACKENDS = ("tfsnn", "tfmot")
# --model: the ALL_INT architectures and the plain-Keras zoo (through tfsnn.quantize_model)
MODEL_NAMES = (*sorted(models.ALL_INT_ARCHS), *zoo.ZOO)
CHANCE_FACTOR = 1.5  # a final test accuracy <= 1.5 / classes is reported as not learned


def default_run_dir(config):
    """``logs/quant_<dataset>[_<zoo model>]_k<k>[_ternary]``, or ``logs/fp_<dataset>[_<zoo model>]``
    for full precision."""
    ds = config["dataset"] + (f"_{config['model']}" if config.get("model") in zoo.ZOO else "")
    if config["full_precision"]:
        return f"logs/fp_{ds}"
    return f"logs/quant_{ds}_k{config['k']}" + ("_ternary" if config["use_ternary"] else "")


def resolve(config):
    """Fill defaults and derived keys (``model``, ``run_dir``) and validate every value.

    Raises ``runs.ConfigError`` naming the offending flag before any work is done.
    """
    c = runs.merge(config, DEFAULTS, extra_keys=("model",))
    need = runs.checker(c)

    need(isinstance(c["k"], (int, np.integer)) and c["k"] >= 0, "k", "must be an integer >= 0")
    need(c["mode"] in MODES, "mode", f"must be one of {', '.join(MODES)}")
    need(c["dataset"] in data.names("quant"), "dataset",
         f"must be one of {', '.join(data.names('quant'))}")
    runs.check_run_options(c)
    need(c["learning_rate"] > 0, "learning_rate", "must be > 0")
    need(c["lr_schedule"] in SCHEDULES, "lr_schedule", f"must be one of {', '.join(SCHEDULES)}")
    need(not (c["mode"] == "inference" and c["resume"]), "resume", "only applies to --mode training")
    need(c["qat_backend"] in BACKENDS, "qat_backend", f"must be one of {', '.join(BACKENDS)}")
    if c["qat_backend"] == "tfmot":
        need(not c["resume"], "resume", "is not supported with --qat_backend tfmot")
        need(not c["full_precision"], "full_precision", "applies to --qat_backend tfsnn only")
        need(c["strategy"] == "default", "strategy", "--qat_backend tfmot runs on one device")
    c["model"] = config.get("model") or data.get(c["dataset"]).models.get("quant")
    need(c["model"] in MODEL_NAMES, "model", f"must be one of {', '.join(MODEL_NAMES)}")
    c["run_dir"] = c["run_dir"] or default_run_dir(c)
    return c


def epoch_maker(name, x, y, batch_size, seed):
    """``epoch -> dataset`` with a permutation that depends only on (seed, epoch)."""
    return data.epoch_maker(x, y, batch_size, seed,
                            lambda b: data.preprocess(name, b, True, "quant"))


def learning_rate(c, steps_per_epoch):
    """The learning rate or schedule of a config (cosine: decay to 0 over ``epochs``)."""
    if c["lr_schedule"] == "cosine":
        return keras.optimizers.schedules.CosineDecay(c["learning_rate"],
                                                      decay_steps=c["epochs"] * steps_per_epoch)
    return c["learning_rate"]


def build_model(c, steps_per_epoch):
    """The compiled (quantized or full-precision) model of a config."""
    ds = data.get(c["dataset"])
    if c["model"] in zoo.ZOO:
        model = zoo.zoo_model(c["model"], ds.input_shape("quant"), ds.classes, not c["full_precision"],
                              c["k"], c["use_ternary"])
    else:
        model = models.all_int_model(c["model"], k=c["k"], quantized=not c["full_precision"],
                                     ternary=c["use_ternary"], num_classes=ds.classes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(c, steps_per_epoch)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def evaluate(model, name, x, y, batch_size):
    """``(loss, accuracy)`` of a model on uint8 images."""
    ds = data.pipeline(name, x, y, batch_size, training=False)
    loss, acc = model.evaluate(ds, verbose=0)
    return float(loss), float(acc)


def train(config, arrays=None, callbacks=()):
    """Train per ``config``; returns the results dict also written to ``results.json``.

    ``arrays`` optionally replaces the dataset loader: ``(train, val_or_None, test)`` tuples of
    ``(uint8 images, labels)`` (used for custom splits, e.g. the MNIST test split only).
    """
    c = resolve(config)
    if c["qat_backend"] == "tfmot":
        from tfsnn.training import tfmot  # needs TF_USE_LEGACY_KERAS=1 set before TF import
        return tfmot.train(c, arrays or data.split_run(c))
    strategy = distribute.get_strategy(c["strategy"])  # first: TF_CONFIG's cluster starts here
    run = runs.RunDir(distribute.worker_run_dir(c["run_dir"], strategy))
    with run.lock():
        return _train(c, run, arrays, callbacks, strategy)


def _train(c, run, arrays, callbacks, strategy):
    if (finished := run.start(c, IDENTITY_KEYS, DEFAULTS)) is not None:
        return finished  # resuming a finished run changes nothing
    (xtr, ytr), val, (xte, yte) = arrays or runs.check_split(c, data.split_run(c))
    run.prepare(c, IDENTITY_KEYS, c["resume"], c["overwrite"], ("inference.json",),
                defaults=DEFAULTS)
    keras.utils.set_random_seed(c["seed"])
    steps = runs.steps_for(len(xtr), c["batch_size"])
    val_ds = None if val is None else data.pipeline(c["dataset"], *val, c["batch_size"], False)
    timer = runs.EpochTimer()
    if c["tensorboard"] and not c["full_precision"] and c["model"] in models.ALL_INT_ARCHS:
        sample = data.preprocess(c["dataset"], xte[:SPIKE_SAMPLE], False)
        callbacks = [*callbacks, SpikeActivity(run.tensorboard, sample,
                                               lambda m: all_int_probes(m, c["k"]))]
    start = time.perf_counter()
    model = runs.fit(run, lambda: build_model(c, steps),
                     epoch_maker(c["dataset"], xtr, ytr, c["batch_size"], c["seed"]),
                     steps, c["epochs"], c["resume"], val_ds=val_ds, strategy=strategy,
                     callbacks=[timer, *callbacks], tensorboard=c["tensorboard"], verbose=c["verbose"],
                     learning_rate=learning_rate(c, steps))
    runs.save_final_model(run, model)
    loss, acc = evaluate(model, c["dataset"], xte, yte, c["batch_size"])
    results = dict(test_accuracy=acc, test_loss=loss, test_examples=int(len(xte)),
                   train_examples=int(len(xtr)), epochs=c["epochs"],
                   **timer.summary(),
                   seconds_total=time.perf_counter() - start, model=c["model"],
                   quantized=not c["full_precision"], k=c["k"], use_ternary=c["use_ternary"])
    if acc <= CHANCE_FACTOR / data.get(c["dataset"]).classes:
        results["warning"] = (f"test accuracy {acc:.4f} is near chance: the model did not learn "
                              "(too few epochs or examples, or a learning rate too high or low)")
    return runs.save_results(run, results)


def infer(config):
    """Evaluate the run directory's ``model.keras`` on the test split; returns the results.

    Keys of ``IDENTITY_KEYS`` missing from ``config`` are taken from the run's ``flags.json``;
    given ones must match it.
    """
    c = resolve({**config, "mode": "inference"})
    run = runs.RunDir(c["run_dir"])
    if not run.model.is_file():
        raise runs.ConfigError(f"--run_dir {run.path}: no trained model ({run.model.name}); "
                               "train first with --mode training")
    saved = run.saved_flags() or {}
    diff = [k for k in IDENTITY_KEYS if k in config and k in saved and saved[k] != config[k]]
    if diff:
        raise runs.ConfigError("the model in --run_dir was trained with " + ", ".join(
            f"--{k}={saved[k]!r} (not {config[k]!r})" for k in diff))
    c.update({k: saved[k] for k in IDENTITY_KEYS if k in saved})
    (xte, yte), = data.load(c["dataset"], splits=("test",))
    if c["max_test_examples"]:
        xte, yte = xte[:c["max_test_examples"]], yte[:c["max_test_examples"]]
    model = runs.load_model(run.model)
    loss, acc = evaluate(model, c["dataset"], xte, yte, c["batch_size"])
    results = dict(test_accuracy=acc, test_loss=loss, test_examples=int(len(xte)))
    runs.atomic_write_json(run.path / "inference.json", results)
    return results


def summary_line(c, results):
    """The one-line final summary a script prints."""
    what = "fp32" if c["full_precision"] else f"k={c['k']} ternary={c['use_ternary']}"
    spe = results.get("seconds_per_epoch")
    per_epoch = f"epochs={results['epochs']} time/epoch={spe:.1f}s " if spe else ""
    return (f"final: dataset={c['dataset']} model={c['model']} {what} "
            f"test_accuracy={results['test_accuracy']:.4f} {per_epoch}run_dir={c['run_dir']}")

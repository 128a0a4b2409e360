"""The run directory every script shares: flags, checkpoints, resume, TensorBoard, results.

Layout of ``<run_dir>/``:

* ``flags.json``      the configuration the run was started with (checked on every restart)
* ``checkpoint/last.keras`` + ``checkpoint/state.json``  model + optimizer state after the last
  finished epoch (``{"epoch": n}``, n = epochs done); both written atomically
* ``checkpoint/best.keras`` + ``checkpoint/best.json``  the model of the best validation epoch
  (methods that select on a dev split: ``{"epoch", "monitor", "value"}``)
* ``model.keras``     the final trained model
* ``history.csv``     per-epoch metrics (appended on resume)
* ``tb/``             TensorBoard event files
* ``results.json``    final figures of the run

Only Keras / TensorFlow / the standard library are imported here (no tfsnn modules).
"""
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf


STRATEGIES = ("default", "mirrored", "multi_worker")


class ConfigError(ValueError):
    """A flag or configuration value is invalid; the message names the flag."""


def merge(config, defaults, extra_keys=()):
    """``defaults`` updated with the non-None values of ``config``; unknown keys are an error."""
    unknown = set(config) - set(defaults) - set(extra_keys)
    if unknown:
        raise ConfigError(f"unknown option(s): {sorted(unknown)}")
    return {**defaults, **{k: v for k, v in config.items() if v is not None}}


def checker(c):
    """``need(ok, flag, msg)``: raise ``ConfigError("--flag=value: msg")`` unless ``ok``."""
    def need(ok, flag, msg):
        if not ok:
            raise ConfigError(f"--{flag}={c[flag]!r}: {msg}")
    return need


def check_integers(c, flags, minimum=1):
    """``ConfigError("--flag=value: must be an integer >= minimum")`` for the first bad flag."""
    need = checker(c)
    for flag in flags:
        need(int(c[flag]) == c[flag] and c[flag] >= minimum, flag,
             f"must be an integer >= {minimum}")


def check_run_options(c):
    """Checks every training script shares: positive epochs / batch size, subset sizes >= 0,
    a known ``--strategy``, and ``--resume`` without ``--overwrite`` (keys absent are skipped)."""
    need = checker(c)
    check_integers(c, [flag for flag in ("epochs", "batch_size") if flag in c])
    for flag in ("max_train_examples", "max_test_examples", "validation_examples"):
        if flag in c:
            need(c[flag] >= 0, flag, "must be >= 0 (0 = all / none)")
    if "strategy" in c:
        need(c["strategy"] in STRATEGIES, "strategy", f"must be one of {', '.join(STRATEGIES)}")
    need(not (c.get("resume") and c.get("overwrite")), "overwrite",
         "cannot be combined with --resume")


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_model(model, path):
    """``model.save(path)`` through a temporary ``.keras`` file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class RunDir:
    """Paths and state of one run directory (see the module docstring for the layout)."""

    def __init__(self, path):
        self.path = Path(path)
        self.flags = self.path / "flags.json"
        self.checkpoint = self.path / "checkpoint" / "last.keras"
        self.checkpoint_state = self.path / "checkpoint" / "state.json"
        self.model = self.path / "model.keras"
        self.history = self.path / "history.csv"
        self.tensorboard = self.path / "tb"
        self.results = self.path / "results.json"
        self.best = self.path / "checkpoint" / "best.keras"
        self.best_state = self.path / "checkpoint" / "best.json"

    def saved_flags(self):
        return json.loads(self.flags.read_text()) if self.flags.is_file() else None

    def best_epoch(self):
        """``{"epoch", "monitor", "value"}`` of the saved best-epoch model, or None."""
        if not (self.best_state.is_file() and self.best.is_file()):
            return None
        return json.loads(self.best_state.read_text())

    def epochs_done(self):
        """Epochs finished by the last checkpoint (0 if there is none)."""
        if not (self.checkpoint_state.is_file() and self.checkpoint.is_file()):
            return 0
        return int(json.loads(self.checkpoint_state.read_text())["epoch"])

    def prepare(self, config, identity_keys, resume, overwrite=False, extras=()):
        """Check ``config`` against what the directory holds, then record it.

        Fails (``ConfigError`` naming the flag) when the directory was made with a different
        value of any of ``identity_keys`` (e.g. k, dataset), when ``resume`` is set but there is no
        checkpoint, or when a checkpoint exists, ``resume`` is not set and ``overwrite`` is not set.
        ``overwrite`` (without ``resume``) deletes the previous run's checkpoint, model, history,
        results, ``tb/`` and the method's own products ``extras`` (file names in the directory,
        e.g. ``ann.keras``), so nothing of the old run is reused or mixed in.
        Returns the number of epochs already done (the epoch to start from).
        """
        saved = self.saved_flags()
        done = self.epochs_done()
        if saved is not None and not overwrite:
            diff = [k for k in identity_keys if k in saved and saved[k] != config.get(k)]
            if diff:
                raise ConfigError(
                    f"--run_dir {self.path} holds a run with a different configuration: " + ", ".join(
                        f"--{k}={saved[k]!r} there vs --{k}={config.get(k)!r} now" for k in diff)
                    + ". Choose another --run_dir (or pass --overwrite to start it anew).")
        if resume and done == 0:
            raise ConfigError(f"--resume: no checkpoint in {self.checkpoint.parent} to resume from; "
                              "run without --resume to start training.")
        if not resume and done > 0 and not overwrite:
            raise ConfigError(f"--run_dir {self.path} already has a checkpoint after epoch {done}; "
                              "pass --resume to continue it or --overwrite to start anew.")
        if overwrite and not resume:
            for p in (self.checkpoint, self.checkpoint_state, self.best, self.best_state,
                      self.history, self.model, self.results,
                      *(self.path / name for name in extras)):
                if p.is_file():
                    p.unlink()
            shutil.rmtree(self.tensorboard, ignore_errors=True)
            done = 0
        atomic_write_json(self.flags, config)
        return done


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer state after every epoch, atomically, then ``state.json``."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        atomic_save_model(self.model, self.run.checkpoint)
        atomic_write_json(self.run.checkpoint_state, {"epoch": epoch + 1})


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model of the epoch with the best ``monitor`` (lowest for ``mode="min"``) to
    ``run.best`` and ``{"epoch", "monitor", "value"}`` (epoch 1-based) to ``run.best_state``.

    ``resumed_at``: the epochs already done when resuming; the stored best counts only if it is
    from one of them (a best saved by an epoch whose checkpoint was never written is ignored).
    """

    def __init__(self, run, monitor="val_loss", mode="min", resumed_at=0):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {mode!r}")
        self.run, self.monitor, self.mode = run, monitor, mode
        state = run.best_epoch() if resumed_at else None
        ok = state and state["monitor"] == monitor and state["epoch"] <= resumed_at
        self.best = state["value"] if ok else None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
            atomic_save_model(self.model, self.run.best)
            atomic_write_json(self.run.best_state,
                              {"epoch": epoch + 1, "monitor": self.monitor, "value": value})


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (training + validation) in ``self.seconds``."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def summary(self):
        """``{"seconds_per_epoch": mean or None, "epoch_seconds": [...]}`` of the epochs run in
        this process (epochs restored by ``--resume`` are not timed)."""
        secs = [float(s) for s in self.seconds]
        return dict(seconds_per_epoch=float(sum(secs) / len(secs)) if secs else None,
                    epoch_seconds=secs)


def get_strategy(name):
    """A ``tf.distribute`` strategy by flag value: default | mirrored | multi_worker."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":  # every GPU, or every logical CPU device when there is no GPU
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in gpus or
                                               tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"--strategy must be one of default, mirrored, multi_worker; got {name!r}")


def epoch_dataset(make_epoch, first_epoch, epochs):
    """Concatenate ``make_epoch(e)`` for e in ``[first_epoch, epochs)`` into one dataset.

    Each epoch's order depends only on its index, so a resumed run sees exactly the batches the
    uninterrupted run would have seen. Use with ``steps_per_epoch``.
    """
    return tf.data.Dataset.range(first_epoch, epochs).flat_map(make_epoch)


def steps_for(n, batch_size):
    return math.ceil(n / batch_size)


def fit(run, build, train_epoch, steps_per_epoch, epochs, resume, val_ds=None, strategy=None,
        callbacks=(), tensorboard=True, verbose=1, best=None):
    """Train with the run directory's conventions; returns the trained model.

    Args:
      run: a ``RunDir`` already ``prepare``d.
      build: ``() -> compiled keras.Model`` (called inside ``strategy.scope()`` when starting).
      train_epoch: ``epoch (int64 tensor) -> tf.data.Dataset`` of one epoch's batches.
      steps_per_epoch: batches per epoch.
      epochs: total epochs (including those already done when resuming).
      resume: continue from the last checkpoint (model, optimizer state and epoch counter).
      val_ds: validation dataset evaluated after every epoch.
      callbacks: run before the run directory's own (so values they add to ``logs`` reach
        ``history.csv`` and TensorBoard).
      best: ``(monitor, mode)``, e.g. ``("val_loss", "min")``: also keep the best epoch's model
        (``BestCheckpoint``; read it back with ``run.best_epoch()`` / ``run.best``).
    """
    strategy = strategy or tf.distribute.get_strategy()
    first = run.epochs_done() if resume else 0
    with strategy.scope():
        model = keras.models.load_model(run.checkpoint) if resume else build()
    if first >= epochs:
        return model
    cbs = list(callbacks)
    if best is not None:  # before EpochCheckpoint: a crash between the two redoes the epoch
        cbs.append(BestCheckpoint(run, *best, resumed_at=first))
    cbs += [EpochCheckpoint(run), keras.callbacks.CSVLogger(str(run.history), append=resume)]
    if tensorboard:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(run.tensorboard)))
    model.fit(epoch_dataset(train_epoch, first, epochs), epochs=epochs, initial_epoch=first,
              steps_per_epoch=steps_per_epoch, validation_data=val_ds, shuffle=False,
              callbacks=cbs, verbose=verbose)
    return model

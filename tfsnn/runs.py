"""The run directory every script shares: flags, crash-consistent checkpoints, exact resume,
an exclusive lock, TensorBoard, results.

Layout of ``<run_dir>/``:

* ``flags.json``      the configuration of the run (checked on every restart; ``--resume`` may
  change only ``RESUME_MAY_CHANGE``, e.g. ``--epochs`` to extend a run)
* ``.lock``           held (``flock``) by the one process working in the directory; holds its PID
* ``checkpoint/current.json``  the commit pointer ``{"epoch", "dir", "state_sha256"}``: the last
  finished epoch. Switching it (one ``rename``) is the epoch's commit.
* ``checkpoint/epoch-NNNN/``  one complete epoch: ``model.keras`` (model, optimizer and schedule
  state) and ``state.json`` (``epoch``, the model's sha256, the random-generator state of every
  stochastic layer, the history rows up to this epoch, the best epoch so far). Written under a
  temporary name, renamed when complete; only the current epoch and the best one are kept.
* ``model.keras``     the final trained model
* ``history.csv``     per-epoch metrics (rewritten from the committed state; never half a row)
* ``tb/``             TensorBoard event files
* ``results.json``    final figures of the run

An interrupted commit leaves the previous epoch current; its leftovers are removed on the next
start. Every state file is verified (checksums) before use: a damaged or hand-edited file stops
the run with a ``RunError`` naming it. Only Keras / TensorFlow / the standard library are
imported here (no tfsnn modules).

Test hook: with ``$TFSNN_FAULT_KILL_AT=n`` the process sends itself SIGKILL at the n-th commit
step (counted over the process; the steps of one epoch commit are ``COMMIT_STEPS``, then
``FINAL_STEPS`` for ``model.keras`` / ``results.json``), to test crash consistency.
"""
import csv
import errno
import hashlib
import io
import json
import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


STRATEGIES = ("default", "mirrored", "multi_worker")
# Flags ``--resume`` may change (everything else must equal the run's flags.json).
RESUME_MAY_CHANGE = ("epochs", "resume", "overwrite", "verbose", "tensorboard", "strategy",
                     "run_dir", "mode", "jit_compile")
FAULT_ENV = "TFSNN_FAULT_KILL_AT"
COMMIT_STEPS = ("model_written", "state_written", "epoch_dir_renamed", "pointer_tmp_written",
                "pointer_switched", "history_written", "pruned")
FINAL_STEPS = ("final_model_written", "results_written")
FORMAT = 2  # checkpoint layout version


class ConfigError(ValueError):
    """A flag or configuration value is invalid; the message names the flag."""


class RunError(RuntimeError):
    """The run cannot go on (locked, damaged file, diverged, no space); the message names the
    file or flag and what to do."""


class TrainingDiverged(RunError):
    """A non-finite loss: the epoch was not committed."""


_fault_count = 0


def fault_point(label):
    """Test hook: SIGKILL this process at the ``$TFSNN_FAULT_KILL_AT``-th call (see the module
    docstring); no-op when the variable is unset."""
    global _fault_count
    at = os.environ.get(FAULT_ENV)
    if not at:
        return
    _fault_count += 1
    if _fault_count == int(at):
        print(f"[{FAULT_ENV}] killing at commit step {_fault_count}: {label}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def merge(config, defaults, extra_keys=()):
    """``defaults`` updated with the non-None values of ``config``; unknown keys are an error,
    and so is a non-finite float (``nan`` / ``inf``) in any of them."""
    unknown = set(config) - set(defaults) - set(extra_keys)
    if unknown:
        raise ConfigError(f"unknown option(s): {sorted(unknown)}")
    for k, v in config.items():
        if isinstance(v, (float, np.floating)) and not math.isfinite(v):
            raise ConfigError(f"--{k}={v!r}: must be a finite number")
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
    """Checks every training script shares: positive epochs / batch size, subset sizes and seed
    >= 0, a known ``--strategy``, and ``--resume`` without ``--overwrite`` (absent keys skipped)."""
    need = checker(c)
    check_integers(c, [flag for flag in ("epochs", "batch_size") if flag in c])
    for flag in ("max_train_examples", "max_test_examples", "validation_examples"):
        if flag in c:
            need(c[flag] >= 0, flag, "must be >= 0 (0 = all / none)")
    if "seed" in c:
        check_integers(c, ("seed",), minimum=0)
    if "strategy" in c:
        need(c["strategy"] in STRATEGIES, "strategy", f"must be one of {', '.join(STRATEGIES)}")
    need(not (c.get("resume") and c.get("overwrite")), "overwrite",
         "cannot be combined with --resume")


def check_split(c, splits):
    """``splits`` (``(train, val_or_None, test)`` of ``tfsnn.data.split_run(c)``) unchanged, or
    ``ConfigError`` when ``--max_train_examples`` / ``--max_test_examples`` /
    ``--validation_examples`` asked for more images than the split has (never silently fewer)."""
    train, val, test = splits
    got = {"max_train_examples": len(train[0]), "max_test_examples": len(test[0]),
           "validation_examples": 0 if val is None else len(val[0])}
    for flag, n in got.items():
        want = c.get(flag) or 0
        if want > n:
            note = (" (at most a fifth of the training split is held out)"
                    if flag == "validation_examples" else "")
            raise ConfigError(f"--{flag}={want}: the {c.get('dataset', 'dataset')} split has only "
                              f"{n} images for it{note}")
    return splits


def _fsync(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text, fault=None):
    """Write ``text`` (str, or bytes written as they are) to ``path`` through a temporary file
    and a rename (never half-written; the file gets an ordinary file's mode 0644). ``fault``: a
    ``fault_point`` label between the write and the rename. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 -> an ordinary file's mode
        if fault:
            fault_point(fault)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_json(path, obj, fault=None):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", fault)


def atomic_save_model(model, path):
    """``model.save(path)`` through a temporary ``.keras`` file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path, flag="out_dir"):
    """``RunError`` naming ``--flag`` unless ``path`` is (or can be made) a writable directory;
    call it before long work whose results go there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"--{flag} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise RunError(f"--{flag} {path}: not writable ({e.strerror or e})") from None


class staged_dir:
    """``with staged_dir(final) as tmp:`` write every output into ``tmp`` (a sibling of
    ``final``); on success ``tmp`` replaces ``final`` (the old one is moved aside, then deleted),
    on any error ``tmp`` is removed and ``final`` is left as it was: all or nothing."""

    def __init__(self, final):
        self.final = Path(final)

    def __enter__(self):
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.tmp-"))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(self.final, old)
        os.rename(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path, what="file"):
    """``json.load`` of ``path``; ``RunError`` naming it when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: the {what} cannot be read ({type(e).__name__}: {e}); restore it, "
                       "or pass --overwrite to start the run anew") from None


def load_model(path, what="model"):
    """``keras.models.load_model(path)``; ``RunError`` naming the file when it is missing or
    not a readable ``.keras`` file (truncated, corrupt)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: the {what} does not exist")
    try:
        return keras.models.load_model(path)
    except Exception as e:  # zipfile / h5py / JSON errors of a damaged file
        first = (str(e).splitlines() or [""])[0][:200]
        raise RunError(f"{path}: the {what} cannot be loaded, the file is damaged or not a "
                       f".keras model ({type(e).__name__}: {first})") from None


def rng_variables(model):
    """The random-generator state variables of ``model``'s layers (``keras.random.SeedGenerator``
    states of Poisson encoders, dropout, ...): its variables that are not weights, in layer order."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def rng_state(model):
    return [np.asarray(v.numpy()).tolist() for v in rng_variables(model)]


def set_rng_state(model, state, where):
    variables = rng_variables(model)
    if len(variables) != len(state):
        raise RunError(f"{where}: holds {len(state)} random-generator states but the model has "
                       f"{len(variables)}; the checkpoint does not match the model")
    for v, s in zip(variables, state):
        v.assign(np.asarray(s, dtype=v.dtype))


def write_history(path, rows):
    """``history.csv`` (``epoch`` then the sorted metric names, as ``keras.callbacks.CSVLogger``)
    of ``rows`` (dicts), written atomically."""
    keys = sorted({k for r in rows for k in r} - {"epoch"})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["epoch", *keys], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in ["epoch", *keys]})
    atomic_write_text(path, buf.getvalue())


def read_history(path):
    """``{column: [per-epoch floats]}`` of a ``history.csv`` (``{}`` when there is none); a cell
    left empty (a metric missing that epoch) is NaN, so every column stays aligned with ``epoch``."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) if r[k] != "" else float("nan") for r in rows]
            for k in (rows[0] if rows else {})}


_HELD = {}  # real path of a run dir -> [lock file object, depth] held by this process


class RunDir:
    """Paths and state of one run directory (see the module docstring for the layout)."""

    def __init__(self, path):
        self.path = Path(path)
        self.flags = self.path / "flags.json"
        self.lock_file = self.path / ".lock"
        self.checkpoint_dir = self.path / "checkpoint"
        self.pointer = self.checkpoint_dir / "current.json"
        self.model = self.path / "model.keras"
        self.history = self.path / "history.csv"
        self.tensorboard = self.path / "tb"
        self.results = self.path / "results.json"

    # ---------------------------------------------------------------- lock
    def lock(self):
        """Context manager holding the directory's exclusive lock (re-entrant in one process).

        A second process is refused with a ``RunError`` naming the holder's PID; the lock of a
        process that died is free (``flock`` is released by the kernel) and is taken over.
        """
        return _Lock(self)

    # ---------------------------------------------------------------- state
    def saved_flags(self):
        return read_json(self.flags, "run configuration") if self.flags.is_file() else None

    def commit(self):
        """The verified committed state (``state.json`` of the current epoch) or None.

        Raises ``RunError`` naming the file when the pointer, the state or the model does not
        verify (damaged, truncated, hand-edited)."""
        if not self.pointer.is_file():
            legacy = self.checkpoint_dir / "last.keras"
            if legacy.is_file():
                raise RunError(f"{legacy}: a checkpoint of the old layout (no atomic commit); it "
                               "cannot be resumed exactly: pass --overwrite to start anew")
            return None
        ptr = read_json(self.pointer, "checkpoint pointer")
        bad = RunError(f"{self.pointer}: not a valid checkpoint pointer (edited or damaged); pass "
                       "--overwrite to start anew")
        if not (isinstance(ptr, dict) and isinstance(ptr.get("epoch"), int)
                and ptr["epoch"] >= 1 and ptr.get("dir") == f"epoch-{ptr['epoch']:04d}"
                and isinstance(ptr.get("state_sha256"), str)):
            raise bad
        d = self.checkpoint_dir / ptr["dir"]
        state_path, model_path = d / "state.json", d / "model.keras"
        if not state_path.is_file() or sha256(state_path) != ptr["state_sha256"]:
            raise RunError(f"{state_path}: missing or does not match its checksum in "
                           f"{self.pointer} (edited or damaged); pass --overwrite to start anew")
        state = read_json(state_path, "checkpoint state")
        if state.get("epoch") != ptr["epoch"] or state.get("format") != FORMAT:
            raise RunError(f"{state_path}: epoch {state.get('epoch')!r} does not match the pointer's "
                           f"{ptr['epoch']}")
        if not model_path.is_file() or sha256(model_path) != state.get("model_sha256"):
            raise RunError(f"{model_path}: missing or does not match its checksum (truncated or "
                           "damaged); pass --overwrite to start anew")
        saved = self.saved_flags() or {}
        if isinstance(saved.get("epochs"), int) and state["epoch"] > saved["epochs"]:
            raise RunError(f"{state_path}: epoch {state['epoch']} is beyond the run's --epochs="
                           f"{saved['epochs']} in {self.flags}")
        state["dir"] = d
        return state

    def epochs_done(self):
        """Epochs finished by the last commit (0 if there is none)."""
        state = self.commit()
        return state["epoch"] if state else 0

    @property
    def checkpoint(self):
        """``model.keras`` of the committed epoch (a path that does not exist if none)."""
        state = self.commit()
        return state["dir"] / "model.keras" if state else self.checkpoint_dir / "none.keras"

    def best_epoch(self):
        """``{"epoch", "monitor", "value"}`` of the best committed epoch, or None."""
        state = self.commit()
        best = state and state.get("best")
        return {k: best[k] for k in ("epoch", "monitor", "value")} if best else None

    @property
    def best(self):
        """``model.keras`` of the best committed epoch (a path that does not exist if none)."""
        state = self.commit()
        best = state and state.get("best")
        if not best:
            return self.checkpoint_dir / "none.keras"
        return self.checkpoint_dir / f"epoch-{best['epoch']:04d}" / "model.keras"

    def load_checkpoint(self):
        """The committed model with its optimizer and random-generator states."""
        state = self.commit()
        if state is None:
            raise RunError(f"{self.checkpoint_dir}: no committed epoch to resume from")
        model = load_model(state["dir"] / "model.keras", "checkpoint")
        set_rng_state(model, state.get("rng", []), state["dir"] / "state.json")
        return model

    def finished_results(self, epochs):
        """The saved ``results.json`` if the run finished all ``epochs`` (else None)."""
        if not (self.results.is_file() and self.model.is_file()):
            return None
        results = read_json(self.results, "results")
        state = self.commit()
        if state and state["epoch"] == epochs and results.get("epochs") == epochs:
            return results
        return None

    # ---------------------------------------------------------------- start
    def _check_writable(self):
        check_writable(self.path, "run_dir")

    def holds_outputs(self):
        """Whether the directory holds products of a run (commit, model, results, history)."""
        return any(p.exists() for p in (self.pointer, self.checkpoint_dir / "last.keras",
                                        self.model, self.results, self.history))

    def start(self, config, identity_keys, defaults=None):
        """``check`` a run config's ``resume``/``overwrite`` against the directory; returns the
        saved results if ``--resume`` finds the run already finished (resuming it changes
        nothing), else None."""
        self.check(config, identity_keys, config["resume"], config["overwrite"], defaults)
        if config["resume"]:
            return self.finished_results(config["epochs"])
        return None

    def check(self, config, identity_keys, resume, overwrite=False, defaults=None):
        """The checks of ``prepare`` without touching the directory; returns the epochs done.

        Call it before loading data so that a refused restart costs nothing. ``defaults`` (the
        method's option defaults): an option missing from the saved flags.json (the run
        predates it) counts as its default, so ``--resume`` of an older run is refused only
        when such an option is set to something else."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--run_dir {self.path}: exists and is not a directory")
        saved = self.saved_flags()
        if saved is not None and not overwrite:
            diff = [k for k in identity_keys if k in saved and saved[k] != config.get(k)]
            if diff:
                raise ConfigError(
                    f"--run_dir {self.path} holds a run with a different configuration: " + ", ".join(
                        f"--{k}={saved[k]!r} there vs --{k}={config.get(k)!r} now" for k in diff)
                    + ". Choose another --run_dir (or pass --overwrite to start it anew).")
        if overwrite and not resume:
            return 0
        done = self.epochs_done()
        if resume and done == 0 and saved is None:
            raise ConfigError(f"--resume: no checkpoint in {self.checkpoint_dir} to resume from; "
                              "run without --resume to start training.")
        if resume:
            now = json.loads(json.dumps(config))
            if saved is not None:  # options added since the run started: their defaults
                base = json.loads(json.dumps(defaults or {}))
                saved = {**{k: v for k, v in base.items() if k not in saved}, **saved}
            diff = [k for k in sorted(set(saved or {}) | set(now))
                    if k not in RESUME_MAY_CHANGE and (saved or {}).get(k) != now.get(k)]
            if diff:
                raise ConfigError(
                    "--resume: " + ", ".join(f"--{k}={now.get(k)!r} differs from the run's "
                                             f"{(saved or {}).get(k)!r}" for k in diff)
                    + f" ({self.flags}); a resumed run keeps its configuration (only --epochs "
                    "may change, to extend it). Drop the flag, or start a new --run_dir.")
            if config.get("epochs") is not None and config["epochs"] < done:
                raise ConfigError(f"--epochs={config['epochs']}: the run already finished {done} "
                                  "epochs; --resume can only keep or extend --epochs")
        elif done > 0:
            raise ConfigError(f"--run_dir {self.path} already has a checkpoint after epoch {done}; "
                              "pass --resume to continue it or --overwrite to start anew.")
        elif self.holds_outputs():
            raise ConfigError(f"--run_dir {self.path} already holds a run's outputs (model.keras / "
                              "results.json / history.csv); pass --overwrite to start anew.")
        return done

    def prepare(self, config, identity_keys, resume, overwrite=False, extras=(), defaults=None):
        """Check ``config`` against what the directory holds, then record it.

        Fails (``ConfigError`` naming the flag) when the directory was made with a different
        value of any of ``identity_keys`` (e.g. k, dataset), when ``resume`` is set but there is no
        checkpoint or a flag other than ``RESUME_MAY_CHANGE`` differs from the run's, or when the
        directory holds a run and neither ``resume`` nor ``overwrite`` is set; ``RunError`` when
        another process holds the directory or it is not writable.
        ``overwrite`` (without ``resume``) deletes the previous run's checkpoints, model, history,
        results, ``tb/`` and the method's own products ``extras`` (file names in the directory,
        e.g. ``ann.keras``), so nothing of the old run is reused or mixed in.
        Leftovers of an interrupted commit are removed and ``history.csv`` is rewritten from the
        committed state. Takes the directory's lock (kept until ``release()``, or held by an
        enclosing ``with run.lock():``). Returns the number of epochs already done.
        """
        self._check_writable()
        if str(self.path.resolve()) not in _HELD:
            self._lock = self.lock()
            self._lock.__enter__()
        done = self.check(config, identity_keys, resume, overwrite, defaults)
        self.clean_leftovers()
        if overwrite and not resume:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            for p in (self.history, self.model, self.results,
                      *(self.path / name for name in extras)):
                if p.is_file():
                    p.unlink()
            done = 0
        if done == 0:  # events of an attempt that never committed an epoch
            shutil.rmtree(self.tensorboard, ignore_errors=True)
        else:
            self.repair_history()
        atomic_write_json(self.flags, config)
        return done

    def release(self):
        """Release a lock taken by ``prepare`` outside a ``with run.lock():`` block."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.__exit__(None, None, None)
            self._lock = None

    def clean_leftovers(self):
        """Remove temporary files of an interrupted write and epoch directories no commit uses."""
        for p in self.path.glob(".*.tmp*"):
            if p.is_file():
                p.unlink()
        if not self.checkpoint_dir.is_dir():
            return
        try:
            state = self.commit()
        except RunError:
            state = None  # keep everything of a damaged run for inspection
            keep = None
        else:
            keep = set()
            if state:
                keep.add(state["dir"].name)
                if state.get("best"):
                    keep.add(f"epoch-{state['best']['epoch']:04d}")
        for p in self.checkpoint_dir.iterdir():
            if p.name.startswith(".tmp-") or (p.name.startswith(".") and ".tmp" in p.name):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            elif keep is not None and p.is_dir() and p.name.startswith("epoch-") \
                    and p.name not in keep:
                shutil.rmtree(p)

    def repair_history(self):
        """Rewrite ``history.csv`` from the committed rows (a kill after the commit but before
        the CSV write left it one row short)."""
        state = self.commit()
        if state is not None:
            write_history(self.history, state.get("history", []))


class _Lock:
    def __init__(self, run):
        self.run = run
        self.key = None

    def __enter__(self):
        import fcntl
        run = self.run
        run._check_writable()
        self.key = str(run.path.resolve())
        if self.key in _HELD:
            _HELD[self.key][1] += 1
            return run
        f = open(run.lock_file, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                f.close()
                raise
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise RunError(f"--run_dir {run.path} is in use by process {holder} (lock "
                           f"{run.lock_file}); wait for it to finish or choose another --run_dir")
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        _HELD[self.key] = [f, 1]
        return run

    def __exit__(self, *exc):
        import fcntl
        held = _HELD.get(self.key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self.key]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            held[0].close()


class EpochCommit(keras.callbacks.Callback):
    """After every epoch: refuse a non-finite loss (``TrainingDiverged``, nothing committed),
    then commit model + optimizer + schedule + random-generator states + history row + best epoch
    as one (a complete ``checkpoint/epoch-NNNN/``, then one pointer switch), then rewrite
    ``history.csv`` and drop the epoch directories no longer needed.

    ``best``: ``(monitor, mode)`` (mode ``min`` or ``max``): track the best epoch (ties keep the
    earlier one); its directory is kept and read back by ``run.best`` / ``run.best_epoch()``.
    """

    def __init__(self, run, best=None):
        super().__init__()
        if best is not None and best[1] not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {best[1]!r}")
        self.run, self.monitor = run, best
        state = run.commit()
        self.rows = list(state.get("history", [])) if state else []
        old = state.get("best") if state else None
        self.best = old if old and best and old["monitor"] == best[0] else None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": epoch}
        for k, v in logs.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        bad = {k: v for k, v in row.items() if k in ("loss", "val_loss") and not math.isfinite(v)}
        if bad:
            done = epoch
            raise TrainingDiverged(
                f"epoch {epoch + 1}: " + ", ".join(f"{k} is {v}" for k, v in bad.items())
                + f"; training stopped and this epoch was not saved (the run dir keeps epoch "
                f"{done}). Lower --learning_rate or check the data.")
        self.commit(epoch + 1, row)

    def _better(self, value):
        if self.best is None:
            return True
        return value < self.best["value"] if self.monitor[1] == "min" else value > self.best["value"]

    def commit(self, n, row):
        run = self.run
        ck = run.checkpoint_dir
        ck.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{n:04d}"
        tmp = ck / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.model.save(tmp / "model.keras")
        _fsync(tmp / "model.keras")
        fault_point("model_written")
        best = self.best
        if self.monitor is not None and self.monitor[0] in row and self._better(row[self.monitor[0]]):
            best = {"epoch": n, "monitor": self.monitor[0], "value": row[self.monitor[0]]}
        rows = [*self.rows, row]
        state = {"format": FORMAT, "epoch": n, "model_sha256": sha256(tmp / "model.keras"),
                 "rng": rng_state(self.model), "history": rows, "best": best}
        (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
        _fsync(tmp / "state.json")
        fault_point("state_written")
        final = ck / name
        if final.exists():  # left by an attempt that died before its pointer switch
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(ck)
        fault_point("epoch_dir_renamed")
        atomic_write_json(run.pointer, {"epoch": n, "dir": name,
                                        "state_sha256": sha256(final / "state.json")},
                          fault="pointer_tmp_written")
        _fsync(ck)
        fault_point("pointer_switched")
        self.rows, self.best = rows, best  # committed
        write_history(run.history, rows)
        fault_point("history_written")
        keep = {name} | ({f"epoch-{best['epoch']:04d}"} if best else set())
        for p in ck.glob("epoch-*"):
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
        fault_point("pruned")


def save_final_model(run, model):
    """The final ``model.keras``, atomically (then ``save_results``; a run killed in between is
    finished by ``--resume``)."""
    atomic_save_model(model, run.model)
    fault_point("final_model_written")


def save_results(run, results):
    """``results.json``, atomically: the last write of a run. Returns ``results``."""
    atomic_write_json(run.results, results)
    fault_point("results_written")
    return results


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


def set_learning_rate(optimizer, learning_rate):
    """Replace ``optimizer``'s learning rate (a float or a ``LearningRateSchedule``, applied
    from its current ``iterations``); used to extend a resumed run over a new ``--epochs``."""
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        optimizer.learning_rate = learning_rate
    elif isinstance(optimizer.learning_rate, keras.optimizers.schedules.LearningRateSchedule) \
            or not hasattr(optimizer.learning_rate, "assign"):
        optimizer.learning_rate = learning_rate
    else:
        optimizer.learning_rate.assign(learning_rate)


def check_disk_space(run, model, copies=3, margin=16 << 20):
    """``RunError`` before training when the run dir's file system has less free space than
    ``copies`` checkpoints of ``model`` (weights + optimizer state) plus ``margin`` bytes."""
    variables = list(model.weights) + list(getattr(model.optimizer, "variables", []) or [])
    size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    need = copies * size + margin
    free = shutil.disk_usage(run.path).free
    if free < need:
        raise RunError(f"--run_dir {run.path}: {free / 2**20:.1f} MiB free, a checkpoint needs "
                       f"about {need / 2**20:.1f} MiB (model and optimizer, {copies} copies); "
                       "free some space or choose another --run_dir")


def fit(run, build, train_epoch, steps_per_epoch, epochs, resume, val_ds=None, strategy=None,
        callbacks=(), tensorboard=True, verbose=1, best=None, learning_rate=None,
        jit_compile=None):
    """Train with the run directory's conventions; returns the trained model.

    Args:
      run: a ``RunDir`` already ``prepare``d.
      build: ``() -> compiled keras.Model`` (called inside ``strategy.scope()`` when starting).
      train_epoch: ``epoch (int64 tensor) -> tf.data.Dataset`` of one epoch's batches.
      steps_per_epoch: batches per epoch.
      epochs: total epochs (including those already done when resuming).
      resume: continue from the last commit: model, optimizer state, epoch counter and the
        random-generator states of every stochastic layer (exactly the uninterrupted run); a
        run killed before its first commit starts afresh.
      val_ds: validation dataset evaluated after every epoch.
      callbacks: run before the commit (so values they add to ``logs`` reach ``history.csv``
        and TensorBoard).
      best: ``(monitor, mode)``, e.g. ``("val_loss", "min")``: also keep the best epoch's model
        (read it back with ``run.best_epoch()`` / ``run.best``).
      learning_rate: the run's learning rate or schedule for the current ``epochs``; set on the
        resumed optimizer (the same value unless ``--epochs`` was raised to extend the run).
      jit_compile: None, or whether to XLA-compile the whole train step, set on the model
        whether built or resumed (a performance switch ``--resume`` may change).
    Raises:
      TrainingDiverged: a non-finite loss (the epoch is not committed).
      RunError: a damaged checkpoint or too little disk space.
    """
    strategy = strategy or tf.distribute.get_strategy()
    first = run.epochs_done() if resume else 0  # resume before any commit: start afresh
    with strategy.scope():
        model = run.load_checkpoint() if first else build()
        if first and learning_rate is not None:
            set_learning_rate(model.optimizer, learning_rate)
        if jit_compile is not None:
            model.jit_compile = bool(jit_compile)
    if first >= epochs:
        return model
    check_disk_space(run, model)
    cbs = [*callbacks, EpochCommit(run, best)]
    if tensorboard:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(run.tensorboard)))
    model.fit(epoch_dataset(train_epoch, first, epochs), epochs=epochs, initial_epoch=first,
              steps_per_epoch=steps_per_epoch, validation_data=val_ds, shuffle=False,
              callbacks=cbs, verbose=verbose)
    return model

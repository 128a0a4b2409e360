"""Fault injection on run directories (tfsnn.runs): SIGKILL at each step of an epoch commit
then ``--resume`` (bit-identical to an uninterrupted run), two processes on one run dir, a full
disk, damaged files, and inputs that used to give silent wrong results.

Kills use the ``$TFSNN_FAULT_KILL_AT=n`` test hook (SIGKILL at the n-th commit step, see
``tfsnn.runs``). The default suite kills train_quant.py and spike_bp once each at the worst
point (issue 16 item 1: the epoch's model is complete but the commit pointer not switched);
``-m slow`` kills every method at several points and train_quant.py at every point.
"""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tfsnn import runs

from conftest import REPO

NC = len(runs.COMMIT_STEPS)
TINY = ["--epochs", "2", "--notensorboard"]
COMMANDS = {  # tiny real-data runs of 2 epochs (Fashion-MNIST, offline)
    "quant": ["train_quant.py", "--k", "0", "--mode", "training", "--batch_size", "100",
              "--max_train_examples", "300", "--max_test_examples", "100",
              "--validation_examples", "100", *TINY],
    "spike_bp": ["train_snn.py", "--method", "spike_bp", "--timesteps", "4", "--fc_widths", "16",
                 "--batch_size", "32", "--max_train_examples", "64", "--max_test_examples", "32",
                 "--validation_examples", "32", *TINY],
    "hybrid": ["train_snn.py", "--method", "hybrid", "--model", "vgg5", "--timesteps", "8",
               "--fc_widths", "16,16", "--ann_epochs", "1", "--balance_examples", "16",
               "--balance_timesteps", "30", "--batch_size", "32", "--max_train_examples", "64",
               "--max_test_examples", "32", "--validation_examples", "32", *TINY],
    "iir": ["train_snn.py", "--method", "iir", "--encoding", "poisson", "--timesteps", "4",
            "--batch_size", "32", "--max_train_examples", "64", "--max_test_examples", "32",
            "--validation_examples", "32", *TINY],
    "proxy": ["train_snn.py", "--method", "proxy", "--width", "4", "--timesteps", "3",
              "--batch_size", "32", "--max_train_examples", "64", "--max_test_examples", "32",
              *TINY],
    "associative_memory": ["train_snn.py", "--method", "associative_memory", "--repeats", "4",
                           "--batch_size", "8", "--eval_repeats", "1", "--dev_repeats", "1",
                           "--nopng", *TINY],
}


def script(args, run_dir, *extra, kill_at=None, env=None, timeout=900):
    e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    e.pop(runs.FAULT_ENV, None)
    if kill_at is not None:
        e[runs.FAULT_ENV] = str(kill_at)
    return subprocess.run([sys.executable, str(REPO / "scripts" / args[0]), *args[1:],
                           f"--run_dir={run_dir}", *extra], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=REPO)


def ok(out):
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith("final:"), out.stdout[-1000:]
    return out


def failed(out, needle):
    """Exit code != 0, a message holding ``needle``, no traceback, no final line."""
    assert out.returncode not in (0, None), out.stdout[-1000:]
    assert needle in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "final:" not in out.stdout


def weights(path):
    return keras.models.load_model(path).get_weights()


TIMING = ("seconds_per_epoch", "epoch_seconds", "seconds_total")


def outcome(run_dir):
    """What must not depend on where the run was killed: weights, history, results."""
    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    return (weights(run_dir / "model.keras"), (run_dir / "history.csv").read_text(),
            {k: v for k, v in res.items() if k not in TIMING})


def assert_same(a, b):
    wa, ha, ra = a
    wb, hb, rb = b
    assert len(wa) == len(wb)
    for u, v in zip(wa, wb):
        np.testing.assert_array_equal(u, v)  # bit-identical
    assert ha == hb and ra == rb


_REFERENCES = {}


def reference_dir(method, tmp_path_factory):
    """The run dir of the uninterrupted run (once per session and method; copy it to change it)."""
    if method not in _REFERENCES:
        d = tmp_path_factory.mktemp(f"ref_{method}") / "run"
        ok(script(COMMANDS[method], d))
        _REFERENCES[method] = (d, outcome(d))
    return _REFERENCES[method][0]


def reference(method, tmp_path_factory):
    reference_dir(method, tmp_path_factory)
    return _REFERENCES[method][1]


def copy_of_reference(tmp_path, tmp_path_factory):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(reference_dir("quant", tmp_path_factory), d)
    (d / ".lock").unlink(missing_ok=True)
    return d


def kill_then_resume(method, kill_at, tmp_path):
    d = tmp_path / f"killed_{kill_at}"
    out = script(COMMANDS[method], d, kill_at=kill_at)
    assert out.returncode == -9, (kill_at, out.returncode, out.stderr[-2000:])
    assert "final:" not in out.stdout
    ok(script(COMMANDS[method], d, "--resume"))
    leftovers = [p.name for p in (d / "checkpoint").iterdir() if p.name.startswith(".")]
    assert not leftovers
    return outcome(d)


# ------------------------------------------------------------------ kill and resume

@pytest.mark.parametrize("method", ["quant", pytest.param("spike_bp", marks=pytest.mark.slow)])
def test_kill_between_model_and_pointer_then_resume_is_exact(method, tmp_path, tmp_path_factory):
    """Issue 16 items 1-2: killed after epoch 2's checkpoint is complete but before its commit
    pointer switched: --resume redoes epoch 2 once, with the random state of epoch 1's commit."""
    at = NC + runs.COMMIT_STEPS.index("epoch_dir_renamed") + 1
    assert_same(kill_then_resume(method, at, tmp_path), reference(method, tmp_path_factory))


def test_spike_bp_resume_after_a_crash_in_epoch_2_is_exact(tmp_path, monkeypatch):
    """In process (fast): Poisson encoder and dropout states are committed with the epoch, so
    a run that dies in epoch 2 and resumes ends bit-identical to the uninterrupted one."""
    sys.path.insert(0, str(REPO / "tests" / "training"))
    from test_train_snn import arrays
    from tfsnn.training import snn

    class Died(Exception):
        pass

    class DieInEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1:
                raise Died  # in the middle of epoch 2, after one optimizer step

    cfg = dict(method="spike_bp", timesteps=6, epochs=2, batch_size=16, fc_widths=[32],
               verbose=0, tensorboard=False)
    snn.train({**cfg, "run_dir": str(tmp_path / "a")}, arrays())
    fit = runs.fit
    monkeypatch.setattr(runs, "fit", lambda *a, **k: fit(
        *a, **{**k, "callbacks": [*k.get("callbacks", ()), DieInEpoch2()]}))
    with pytest.raises(Died):
        snn.train({**cfg, "run_dir": str(tmp_path / "b")}, arrays())
    monkeypatch.setattr(runs, "fit", fit)
    assert runs.RunDir(tmp_path / "b").epochs_done() == 1
    snn.train({**cfg, "run_dir": str(tmp_path / "b"), "resume": True}, arrays())
    for u, v in zip(weights(tmp_path / "a" / "model.keras"), weights(tmp_path / "b" / "model.keras")):
        np.testing.assert_array_equal(u, v)
    ra, rb = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert ra["test_accuracy"] == rb["test_accuracy"] and ra["test_loss"] == rb["test_loss"]


@pytest.mark.slow  # 16 kills x (run + resume), ~15 min on 2 cores
@pytest.mark.parametrize("kill_at", range(1, 2 * NC + len(runs.FINAL_STEPS) + 1))
def test_quant_every_commit_step(kill_at, tmp_path, tmp_path_factory):
    assert_same(kill_then_resume("quant", kill_at, tmp_path), reference("quant", tmp_path_factory))


@pytest.mark.slow  # per method 3 kills x (run + resume)
@pytest.mark.parametrize("method", ["spike_bp", "hybrid", "iir", "proxy", "associative_memory"])
@pytest.mark.parametrize("kill_at", [NC + 2, NC + 5, NC + 6, 2 * NC + 1])
def test_snn_methods_kill_and_resume(method, kill_at, tmp_path, tmp_path_factory):
    """Kill points: epoch 2's state written (redo epoch 2), its pointer switched (history.csv
    not yet rewritten), history written, and between model.keras and results.json."""
    assert_same(kill_then_resume(method, kill_at, tmp_path), reference(method, tmp_path_factory))


@pytest.mark.slow
def test_resume_of_a_finished_run_changes_nothing(tmp_path, tmp_path_factory):
    ref = reference("quant", tmp_path_factory)
    d = copy_of_reference(tmp_path, tmp_path_factory)
    before = {p: p.read_bytes() for p in (d / "results.json", d / "model.keras", d / "history.csv")}
    ok(script(COMMANDS["quant"], d, "--resume"))
    assert all(p.read_bytes() == b for p, b in before.items())
    assert_same(outcome(d), ref)
    # nothing is overwritten without --overwrite, even with the checkpoints gone
    import shutil
    shutil.rmtree(d / "checkpoint")
    failed(script(COMMANDS["quant"], d), "already holds a run's outputs")
    # --resume must not change what the run means; --epochs may grow (extension)
    failed(script(COMMANDS["quant"], d, "--resume", "--batch_size=50"), "--batch_size=50")


# ------------------------------------------------------------------ two processes

def test_second_process_on_a_locked_run_dir_is_refused(tmp_path):
    d = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tfsnn import runs\n"
         "with runs.RunDir(sys.argv[1]).lock():\n print('locked', flush=True)\n time.sleep(300)",
         str(d)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        failed(script(COMMANDS["quant"], d), f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not (d / "checkpoint").exists()


# ------------------------------------------------------------------ full disk

def test_enospc_during_a_commit_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    """A full disk while epoch 2 is written: the error names the file system error, epoch 1's
    commit stays current and verified, and --resume finishes exactly as an uninterrupted run."""
    sys.path.insert(0, str(REPO / "tests" / "training"))
    from test_train_quant import config, tiny_arrays
    from tfsnn.training import quant
    arrays = tiny_arrays()
    quant.train(config(tmp_path / "a"), arrays)
    real_save, calls = keras.Model.save, []

    def save(self, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            real_save(self, path, *a, **k)
            with open(path, "r+b") as f:  # half written, then the disk is full
                f.truncate(os.path.getsize(path) // 2)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(self, path, *a, **k)
    monkeypatch.setattr(keras.Model, "save", save)
    with pytest.raises(OSError, match="No space left"):
        quant.train(config(tmp_path / "b"), arrays)
    monkeypatch.setattr(keras.Model, "save", real_save)
    b = runs.RunDir(tmp_path / "b" / "run")
    assert b.epochs_done() == 1 and not b.model.exists()
    quant.train(config(tmp_path / "b", resume=True), arrays)
    for u, v in zip(weights(tmp_path / "a" / "run" / "model.keras"), weights(b.model)):
        np.testing.assert_array_equal(u, v)


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_small_disk_is_refused_before_training(small_tmpfs):
    out = script(COMMANDS["quant"], small_tmpfs / "r")
    failed(out, "MiB free, a checkpoint needs")
    assert not (small_tmpfs / "r" / "checkpoint").exists()


# ------------------------------------------------------------------ damaged files

@pytest.mark.slow  # in-process: tests/test_runs.py
def test_damaged_files_give_one_line_errors(tmp_path, tmp_path_factory):
    d = copy_of_reference(tmp_path, tmp_path_factory)
    (d / "model.keras").write_bytes((d / "model.keras").read_bytes()[:1000])
    failed(script(["train_quant.py", "--mode", "inference", "--max_test_examples", "10"], d),
           "model.keras: the model cannot be loaded")
    ptr = d / "checkpoint" / "current.json"
    ptr.write_text(ptr.read_text().replace('"epoch": 2', '"epoch": 99'))
    failed(script(COMMANDS["quant"], d, "--resume", "--epochs=3"), "current.json")
    (d / "flags.json").write_text("{")
    failed(script(COMMANDS["quant"], d, "--resume"), "flags.json")


@pytest.mark.slow  # in-process: tests/test_runs.py
def test_run_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    failed(script(COMMANDS["quant"], tmp_path / "f"), "is not a directory")


def test_truncated_idx_file_is_named(tmp_path):
    import gzip
    import shutil
    from tfsnn.data import loaders
    src = Path("/usr/share/datasets/fashion-mnist")
    if not src.is_dir():
        pytest.skip("Fashion-MNIST not installed")
    dst = tmp_path / "fashion_mnist"
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    raw = gzip.decompress((dst / "t10k-images-idx3-ubyte.gz").read_bytes())
    (dst / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:5000]))
    with pytest.raises(loaders.DatasetFileError, match="t10k-images-idx3-ubyte.gz: truncated"):
        loaders.read_idx(dst / "t10k-images-idx3-ubyte.gz")


@pytest.mark.slow
def test_truncated_idx_file_is_named_by_the_script(tmp_path):
    import gzip
    import shutil
    src = Path("/usr/share/datasets/fashion-mnist")
    if not src.is_dir():
        pytest.skip("Fashion-MNIST not installed")
    dst = tmp_path / "fashion_mnist"
    shutil.copytree(src, dst)
    raw = gzip.decompress((dst / "t10k-images-idx3-ubyte.gz").read_bytes())
    (dst / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:5000]))
    out = script(COMMANDS["quant"], tmp_path / "r", env={"TFSNN_DATA_DIR": str(tmp_path)})
    failed(out, "t10k-images-idx3-ubyte.gz: truncated")


# ------------------------------------------------------------------ silent wrong results

@pytest.mark.parametrize("args,needle", [
    (["--learning_rate=inf"], "--learning_rate=inf: must be a finite number"),
    pytest.param(["--seed=-1"], "--seed=-1: must be an integer >= 0", marks=pytest.mark.slow),
    pytest.param(["--max_train_examples=10000000"], "--max_train_examples=10000000: the "
                 "fashion_mnist split has only", marks=pytest.mark.slow),
])
def test_bad_inputs_are_refused(args, needle, tmp_path):
    failed(script(COMMANDS["quant"], tmp_path / "r", *args), needle)
    assert not (tmp_path / "r" / "checkpoint").exists()


def test_bad_inputs_in_process(monkeypatch):
    from tfsnn.data import loaders
    from tfsnn.training import quant, snn
    with pytest.raises(runs.ConfigError, match="--seed=-1: must be an integer >= 0"):
        quant.resolve({"seed": -1})
    with pytest.raises(runs.ConfigError, match="--learning_rate=nan: must be a finite number"):
        quant.resolve({"learning_rate": float("nan")})
    with pytest.raises(runs.ConfigError, match="--learning_rate=0.0: must be > 0"):
        snn.resolve({"learning_rate": 0.0})  # was silently replaced by the default
    monkeypatch.setenv("TFSNN_DATA_DIR", "/nonexistent")
    with pytest.raises(loaders.DatasetFileError, match="TFSNN_DATA_DIR=/nonexistent"):
        loaders.load("fashion_mnist")


@pytest.mark.slow  # in-process: tests/test_runs.py::test_non_finite_loss_commits_nothing
def test_non_finite_loss_stops_without_final_line(tmp_path):
    out = script(COMMANDS["quant"], tmp_path / "r", "--learning_rate=1e30", "--lr_schedule=constant")
    failed(out, "loss is nan")
    assert not (tmp_path / "r" / "results.json").exists()


@pytest.mark.slow
def test_export_does_not_write_over_spiking_inference_outputs(tmp_path, tmp_path_factory):
    d = copy_of_reference(tmp_path, tmp_path_factory)
    (d / "snn").mkdir()
    (d / "snn" / "summary.json").write_text("{}")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "export_savedmodel.py"),
                          f"--run_dir={d}", f"--out_dir={d}"], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    failed(out, "is not a SavedModel")
    assert (d / "snn" / "summary.json").read_text() == "{}"

"""Run-directory plumbing (tfsnn.runs): the epoch commit, best epoch, resume rules, lock."""
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import runs


def tiny_model():
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    m.compile("sgd", "mse")
    return m


def committer(run, best):
    cb = runs.EpochCommit(run, best)
    cb.set_model(tiny_model())
    return cb


def test_commit_keeps_the_best_epoch(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    cb = committer(run, ("val_loss", "min"))
    for epoch, v in enumerate([0.5, 0.3, 0.4, 0.3]):  # ties do not replace the best
        cb.on_epoch_end(epoch, {"val_loss": v, "loss": 1.0})
    assert run.best_epoch() == {"epoch": 2, "monitor": "val_loss", "value": 0.3}
    assert run.best.is_file() and run.epochs_done() == 4
    # only the current and the best epoch directories are kept
    assert sorted(p.name for p in run.checkpoint_dir.glob("epoch-*")) == ["epoch-0002",
                                                                            "epoch-0004"]
    up = committer(runs.RunDir(tmp_path / "u"), ("val_acc", "max"))
    for epoch, v in enumerate([0.1, 0.7, 0.2]):
        up.on_epoch_end(epoch, {"val_acc": v, "loss": 1.0})
    assert up.run.best_epoch()["epoch"] == 2 and up.best["value"] == 0.7


def test_best_is_carried_over_on_resume_only_for_the_same_monitor(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    cb = committer(run, ("val_loss", "min"))
    cb.on_epoch_end(0, {"val_loss": 0.2, "loss": 1.0})
    assert runs.EpochCommit(run, ("val_loss", "min")).best["value"] == 0.2
    assert runs.EpochCommit(run, ("val_accuracy", "max")).best is None


def test_non_finite_loss_commits_nothing(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    cb = committer(run, None)
    cb.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(runs.TrainingDiverged, match=r"epoch 2: loss is nan.*keeps epoch 1"):
        cb.on_epoch_end(1, {"loss": float("nan")})
    assert run.epochs_done() == 1 and len(run.history.read_text().splitlines()) == 2


def test_fit_logs_callback_values_and_best_model_survives_overwrite(tmp_path):
    """Callbacks passed to ``fit`` run before the commit (their log entries are written);
    ``--overwrite`` removes the checkpoints with the rest of the old run."""

    class AddsLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["extra"] = 10.0 + epoch

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    runs.fit(run, tiny_model, lambda e: ds, 4, 3, False, val_ds=ds, callbacks=[AddsLog()],
             tensorboard=False, verbose=0, best=("val_loss", "min"))
    rows = run.history.read_text().strip().splitlines()
    head = rows[0].split(",")
    assert "extra" in head and [float(r.split(",")[head.index("extra")]) for r in rows[1:]] == \
        [10.0, 11.0, 12.0]
    val = [float(r.split(",")[head.index("val_loss")]) for r in rows[1:]]
    assert run.best_epoch()["epoch"] == int(np.argmin(val)) + 1
    assert run.best_epoch()["value"] == min(val)
    run.prepare({}, (), False, overwrite=True)
    assert not run.best.exists() and not run.checkpoint_dir.exists()


def test_rng_state_of_stochastic_layers_is_restored(tmp_path):
    """The seed-generator state of a Dropout layer is committed and restored by resume: the
    next mask equals the uninterrupted model's."""
    m = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    m.compile("sgd", "mse")
    x = np.ones((4, 64), "float32")
    m(x, training=True)  # advance the generator
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    cb = runs.EpochCommit(run)
    cb.set_model(m)
    cb.on_epoch_end(0, {"loss": 1.0})
    restored = run.load_checkpoint()
    np.testing.assert_array_equal(m.layers[0](x, training=True).numpy(),
                                  restored.layers[0](x, training=True).numpy())


def test_resume_refuses_changed_flags_and_allows_extension(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    c = {"epochs": 2, "batch_size": 8, "seed": 0, "resume": False}
    run.prepare(c, (), False)
    committer(run, None).on_epoch_end(0, {"loss": 1.0})
    for flag, value in (("batch_size", 16), ("seed", 1)):
        with pytest.raises(runs.ConfigError, match=f"--{flag}={value}.*differs"):
            run.check({**c, flag: value, "resume": True}, (), True)
    assert run.check({**c, "epochs": 5, "resume": True}, (), True) == 1
    with pytest.raises(runs.ConfigError, match="already holds|already has a checkpoint"):
        run.check(c, (), False)


def test_resume_of_a_run_older_than_an_option_takes_its_default(tmp_path):
    """A flags.json written before an option existed resumes when the option is at its default
    and is refused when it is set to something else."""
    run = runs.RunDir(tmp_path / "r")
    c = {"epochs": 2, "seed": 0, "resume": False}
    run.prepare(c, (), False)
    committer(run, None).on_epoch_end(0, {"loss": 1.0})
    defaults = {"epochs": 5, "seed": 0, "resume": False, "new_option": (), "gamma": 0.1}
    now = {**c, "epochs": 3, "resume": True, "new_option": [], "gamma": 0.1}
    assert run.check(now, (), True, defaults=defaults) == 1
    with pytest.raises(runs.ConfigError, match="--new_option=\\[\\]"):
        run.check(now, (), True)  # without the defaults the new option is a change
    with pytest.raises(runs.ConfigError, match="--gamma=0.5 differs from the run's 0.1"):
        run.check({**now, "gamma": 0.5}, (), True, defaults=defaults)


def test_damaged_state_files_are_named(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({"epochs": 3}, (), False)
    committer(run, None).on_epoch_end(0, {"loss": 1.0})
    state = run.checkpoint_dir / "epoch-0001" / "state.json"
    good = state.read_text()
    state.write_text(good.replace('"epoch": 1', '"epoch": 99'))
    with pytest.raises(runs.RunError, match="state.json: missing or does not match"):
        run.epochs_done()
    state.write_text(good)
    model = run.checkpoint_dir / "epoch-0001" / "model.keras"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(runs.RunError, match="model.keras: missing or does not match"):
        run.load_checkpoint()
    run.pointer.write_text("{not json")
    with pytest.raises(runs.RunError, match="current.json: the checkpoint pointer cannot be read"):
        run.epochs_done()
    run.flags.write_text("{")
    with pytest.raises(runs.RunError, match="flags.json"):
        run.saved_flags()
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(runs.RunError, match="bad.keras: the model cannot be loaded"):
        runs.load_model(bad)


LOCKER = """
import sys, time
from tfsnn import runs
with runs.RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_lock_refuses_a_second_process_and_is_taken_over_after_death(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    p = subprocess.Popen([sys.executable, "-c", LOCKER, str(run.path), "60"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunError, match=f"in use by process {p.pid}"):
            with run.lock():
                pass
    finally:
        p.kill()
        p.wait()
    with run.lock():  # the dead holder's lock is free
        assert run.lock_file.read_text().strip() == str(__import__("os").getpid())


def test_leftovers_of_an_interrupted_commit_are_removed(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    committer(run, None).on_epoch_end(0, {"loss": 1.0})
    junk = [run.checkpoint_dir / ".tmp-epoch-0002-123", run.checkpoint_dir / "epoch-0002"]
    for d in junk:
        d.mkdir()
        (d / "model.keras").write_bytes(b"")
    (run.path / ".model.tmp.keras").write_bytes(b"")
    run.history.write_text("epoch,loss\n")  # a kill before the row was written
    run.prepare({}, (), True)
    assert not any(d.exists() for d in junk) and not (run.path / ".model.tmp.keras").exists()
    assert run.history.read_text().splitlines() == ["epoch,loss", "0,1.0"]


def test_check_split_refuses_subsets_larger_than_the_data():
    z = (np.zeros(10), np.zeros(10))
    with pytest.raises(runs.ConfigError, match="--max_train_examples=100: .* only 10"):
        runs.check_split({"max_train_examples": 100}, (z, None, z))
    with pytest.raises(runs.ConfigError, match="--validation_examples=5000.*fifth"):
        runs.check_split({"validation_examples": 5000}, (z, z, z))


@pytest.mark.parametrize("bad,msg", [({"learning_rate": float("inf")}, "--learning_rate=inf"),
                                     ({"noise_ratio": float("nan")}, "--noise_ratio=nan")])
def test_non_finite_values_are_refused(bad, msg):
    with pytest.raises(runs.ConfigError, match=msg):
        runs.merge(bad, {"learning_rate": 1.0, "noise_ratio": 0.0})


def test_disk_space_is_checked_before_training(tmp_path, monkeypatch):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(runs.RunError, match="MiB free, a checkpoint needs"):
        runs.check_disk_space(run, tiny_model())

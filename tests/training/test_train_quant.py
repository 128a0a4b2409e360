"""train_quant: flag validation, run-dir rules, resume continuity, MNIST data, MirroredStrategy."""
import csv
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfsnn import runs
from tfsnn.training import quant

from conftest import REPO


def tiny_arrays(n_train=300, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n_train + n_test)
    # class-dependent blobs so that a few steps learn something
    x = rng.integers(0, 60, (n_train + n_test, 28, 28, 1)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c:2 * c + 6, 4:24] = 250
    return (x[:n_train], y[:n_train]), None, (x[n_train:], y[n_train:])


def config(tmp_path, **kw):
    return {"k": 0, "epochs": 2, "batch_size": 50, "run_dir": str(tmp_path / "run"),
            "tensorboard": False, "verbose": 0, **kw}


@pytest.mark.parametrize("flag,value,msg", [
    ("k", -1, "--k=-1: must be an integer >= 0"),
    ("dataset", "svhn", "--dataset='svhn': must be one of"),
    ("epochs", 0, "--epochs=0: must be an integer >= 1"),
    ("learning_rate", 0.0, "--learning_rate=0.0: must be > 0"),
    ("strategy", "tpu", "--strategy='tpu': must be one of"),
    ("max_train_examples", -5, "--max_train_examples=-5"),
])
def test_bad_flags_name_the_flag(flag, value, msg):
    with pytest.raises(runs.ConfigError, match=msg.replace("[", r"\[")):
        quant.resolve({flag: value})


def test_defaults_and_run_dir_names():
    c = quant.resolve({})
    assert c["dataset"] == "fashion_mnist" and c["model"] == "all_int_lenet" and c["use_ternary"]
    assert c["run_dir"] == "logs/quant_fashion_mnist_k0_ternary"
    assert quant.resolve({"k": 2, "use_ternary": False})["run_dir"] == "logs/quant_fashion_mnist_k2"
    assert quant.resolve({"full_precision": True})["run_dir"] == "logs/fp_fashion_mnist"
    assert quant.resolve({"dataset": "cifar10"})["model"] == "all_int_vgg"


def test_run_dir_rules(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    c = quant.resolve(config(tmp_path))
    with pytest.raises(runs.ConfigError, match="--resume: no checkpoint"):
        run.prepare(c, quant.IDENTITY_KEYS, resume=True)
    assert run.prepare(c, quant.IDENTITY_KEYS, resume=False) == 0
    c2 = {**c, "k": 1}
    with pytest.raises(runs.ConfigError, match=r"different configuration: --k=0 there vs --k=1 now"):
        run.prepare(c2, quant.IDENTITY_KEYS, resume=False)


def test_overwrite_removes_the_old_runs_products(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    c = quant.resolve(config(tmp_path))
    run.prepare(c, quant.IDENTITY_KEYS, resume=False)
    keep = run.path / "notes.txt"
    olds = [run.results, run.history, run.path / "ann.keras", run.tensorboard / "train" / "ev"]
    for p in olds + [keep]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("old")
    run.prepare({**c, "k": 1}, quant.IDENTITY_KEYS, resume=False, overwrite=True,
                extras=("ann.keras",))
    assert not any(p.exists() for p in olds) and not run.tensorboard.exists()
    assert keep.read_text() == "old" and run.saved_flags()["k"] == 1


def test_cli_rejects_bad_flag_before_any_work(tmp_path):
    for args, needle in ((["--k", "-2"], "--k=-2"), (["--dataset", "svhn"], "--dataset"),
                         (["--resume"], "--resume: no checkpoint")):
        out = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "train_quant.py"), "--mode", "training",
             "--run_dir", str(tmp_path / "cli"), *args],
            capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        assert needle in out.stderr, out.stderr[-2000:]
        assert not (tmp_path / "cli" / "checkpoint").exists()


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_resume_continues_exactly(tmp_path):
    arrays = tiny_arrays()
    full = quant.train(config(tmp_path / "a"), arrays)
    quant.train(config(tmp_path / "b"), arrays, callbacks=[StopAfterFirstEpoch()])
    b = runs.RunDir(tmp_path / "b" / "run")
    assert b.epochs_done() == 1
    with pytest.raises(runs.ConfigError, match="already has a checkpoint after epoch 1"):
        quant.train(config(tmp_path / "b"), arrays)
    resumed = quant.train(config(tmp_path / "b", resume=True), arrays)
    assert b.epochs_done() == 2
    with open(b.history) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]  # no epoch lost or repeated
    wa = keras.models.load_model(tmp_path / "a" / "run" / "model.keras").get_weights()
    wb = keras.models.load_model(b.model).get_weights()
    for u, v in zip(wa, wb):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    assert resumed["test_accuracy"] == pytest.approx(full["test_accuracy"], abs=0.011)
    saved = json.loads(b.flags.read_text())
    assert saved["k"] == 0 and saved["resume"] is True
    inf = quant.infer({"run_dir": str(b.path), "dataset": "fashion_mnist", "max_test_examples": 100})
    assert 0.0 <= inf["test_accuracy"] <= 1.0
    with pytest.raises(runs.ConfigError, match="trained with --k=0"):
        quant.infer({"run_dir": str(b.path), "k": 3})


def test_mnist_real_test_split_pipeline(tmp_path, mnist_test_split):
    """Train on 8k real MNIST test images, test on the other 2k."""
    x, y = mnist_test_split
    arrays = ((x[:8000], y[:8000]), (x[8000:8500], y[8000:8500]), (x[8000:], y[8000:]))
    res = quant.train(config(tmp_path, dataset="mnist", batch_size=100), arrays)
    assert res["train_examples"] == 8000 and res["test_examples"] == 2000
    assert res["test_accuracy"] > 0.85, res


MIRRORED = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path[:0] = [sys.argv[2], sys.argv[2] + "/training"]  # conftest.py, test_train_quant.py
    from test_train_quant import tiny_arrays
    from tfsnn import runs
    from tfsnn.training import quant
    print("replicas", runs.get_strategy("mirrored").num_replicas_in_sync)
    res = quant.train({"epochs": 1, "batch_size": 50, "run_dir": sys.argv[1], "verbose": 0,
                       "strategy": "mirrored", "tensorboard": False}, tiny_arrays())
    print("accuracy", res["test_accuracy"])
""")


def test_mirrored_strategy_two_logical_cpus(tmp_path):
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "m"), str(REPO / "tests")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "replicas 2" in out.stdout
    assert (tmp_path / "m" / "model.keras").is_file()

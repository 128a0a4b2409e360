"""scripts/spiking_inference.py end to end (a random calibrated LeNet saved as a run dir), its flag
validation, and (slow) the real run: train_quant.py on Fashion-MNIST, then the SNN on the full
test set with zero disagreements."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snn_common import calibrated_lenet

from conftest import REPO
SCRIPT = REPO / "scripts" / "spiking_inference.py"
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def _run(*args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, timeout=timeout,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    calibrated_lenet(k=0).save(d / "model.keras")
    (d / "flags.json").write_text(json.dumps({"k": 0, "use_ternary": True,
                                              "dataset": "fashion_mnist"}))
    return d


def test_flag_validation_names_the_flag(run_dir, tmp_path):
    r = _run("--run_dir", str(tmp_path / "none"))
    assert r.returncode != 0 and "--run_dir" in r.stderr and "model.keras" in r.stderr
    r = _run("--run_dir", str(run_dir), "--k", "1")
    assert r.returncode != 0 and "--k" in r.stderr
    r = _run("--run_dir", str(run_dir), "--noise_ratio", "-0.5", "--batch_size", "0")
    assert r.returncode != 0 and ("--noise_ratio" in r.stderr or "--batch_size" in r.stderr)
    assert not (run_dir / "snn").exists()


@pytest.mark.skipif(not FMNIST.is_file(), reason="Fashion-MNIST not installed")
def test_end_to_end_outputs(run_dir):
    r = _run("--run_dir", str(run_dir), "--max_test_examples", "150", "--batch_size", "50",
             "--timesteps", "16")
    assert r.returncode == 0, r.stderr[-3000:]
    out = run_dir / "snn"
    s = json.loads((out / "summary.json").read_text())
    for key in ("ann_accuracy", "snn_accuracy", "accuracy_per_step", "disagreements",
                "equal_from_step", "timesteps", "k", "use_int", "spikes_per_image",
                "sops_per_image", "ann_macs_per_image"):
        assert key in s
    assert s["timesteps"] == 16 and len(s["accuracy_per_step"]) == 16 and s["n_images"] == 150
    assert s["disagreements"] == 0 and s["snn_accuracy"] == s["ann_accuracy"]
    assert s["converged"] and s["equal_from_step"] is not None
    assert set(s["sops_per_image"]) == {"conv2", "conv3", "conv4", "conv5", "output", "total"}
    series = {n: np.loadtxt(out / n, dtype=np.int64).reshape(3, 16) for n in (
        "accuracy.txt", "spike_num.txt", "spike_collect.txt", "sop_num.txt", "abs_spike.txt",
        "sum_spike.txt")}
    np.testing.assert_array_equal(series["abs_spike.txt"].sum(1), series["spike_num.txt"][:, -1])
    np.testing.assert_array_equal(series["sum_spike.txt"].sum(1),
                                  series["spike_collect.txt"][:, -1])
    assert series["accuracy.txt"].sum(0)[-1] == round(s["snn_accuracy"] * 150)
    assert series["sop_num.txt"][:, -1].sum() == pytest.approx(s["sops_per_image"]["total"] * 150)
    assert (out / "README.md").is_file() and any((out / "tb").iterdir())
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".snn")]  # no staging leftovers
    rep = json.loads((out / "report.json").read_text())  # the per-layer table with energy
    assert (out / "report.md").is_file() and s["energy_J_per_image"]["loihi"] > 0
    assert rep["totals"]["sops_per_image"] == pytest.approx(s["sops_per_image"]["total"])


def test_unwritable_output_fails_before_the_simulation(tmp_path, run_dir):
    d = tmp_path / "run"
    d.mkdir()
    for name in ("model.keras", "flags.json"):
        (d / name).write_bytes((run_dir / name).read_bytes())
    (d / "snn").write_text("a file where the output directory goes")
    r = _run("--run_dir", str(d), "--noise_ratio", "nan")
    assert r.returncode != 0 and "--noise_ratio" in r.stderr
    r = _run("--run_dir", str(d), "--max_test_examples", "50")
    assert r.returncode == 1 and "error:" in r.stderr and "not a directory" in r.stderr
    assert "Traceback" not in r.stderr and "snn batches" not in r.stderr
    (d / "model.keras").write_bytes((run_dir / "model.keras").read_bytes()[:500])  # truncated
    (d / "snn").unlink()
    r = _run("--run_dir", str(d), "--max_test_examples", "50")
    assert r.returncode == 1 and "model.keras" in r.stderr and "damaged" in r.stderr
    assert "Traceback" not in r.stderr and not (d / "snn").exists()


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_file(), reason="Fashion-MNIST not installed")
@pytest.mark.parametrize("k", [0, 1])
def test_real_run_full_fashion_mnist_zero_disagreements(tmp_path, k):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    d = tmp_path / f"q_k{k}"
    subprocess.run([sys.executable, str(REPO / "scripts" / "train_quant.py"), "--k", str(k),
                    "--mode", "training", "--epochs", "1", "--max_train_examples", "10000",
                    "--run_dir", str(d)], cwd=REPO, env=env, check=True, timeout=3000,
                   capture_output=True)
    r = _run("--run_dir", str(d), timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((d / "snn" / "summary.json").read_text())
    assert s["n_images"] == 10000 and s["disagreements"] == 0
    assert s["snn_accuracy"] == s["ann_accuracy"]

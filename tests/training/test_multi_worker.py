"""``train_snn.py --strategy multi_worker``: two worker processes on 127.0.0.1 (``TF_CONFIG``)
train one epoch of spike_bp LeNet on real Fashion-MNIST images and end with the weights of a
single-process run with the same global batch and seed.

Exactness: float64 (``KERAS_HOME/keras.json``); with the Poisson encoder every worker draws the
global batch's noise and uses its own rows (``tfsnn.layers.encoders``), so the trains equal the
single process's. The only difference is then the order of the gradient sum (each
worker sums its half batch, then the all-reduce adds the halves): a few ulp (1e-16 measured)
per weight. The tolerance, 1e-9 of each tensor's largest weight, leaves room for that over 8
SGD steps, while a flipped spike, a misplaced half batch or a loss scaled per replica would
move weights by orders of magnitude more.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

FASHION = "/usr/share/datasets/fashion-mnist"
ARGS = ["--method", "spike_bp", "--dataset", "fashion_mnist",
        "--timesteps", "8", "--epochs", "1", "--batch_size", "32", "--max_train_examples",
        "256", "--max_test_examples", "32", "--validation_examples", "0", "--notensorboard",
        "--seed", "3"]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _weights(run_dir):
    import keras

    import tfsnn  # noqa: F401  (registers the layers of the saved model)
    return keras.models.load_model(run_dir / "model.keras").get_weights()


@pytest.mark.parametrize("encoding", ["direct", "poisson"])
def test_two_workers_equal_one_process(tmp_path, encoding):
    pytest.importorskip("tensorflow")
    if not os.path.isdir(FASHION):
        pytest.skip(f"needs Fashion-MNIST under {FASHION}")
    keras_home = tmp_path / "keras"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text(json.dumps({"floatx": "float64",
                                                       "backend": "tensorflow"}))
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "-1"}
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    script = str(REPO / "scripts" / "train_snn.py")
    args = [*ARGS, "--encoding", encoding]
    procs = [subprocess.Popen([sys.executable, script, *args, "--run_dir", str(tmp_path / "one")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)]
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, script, *args, "--strategy", "multi_worker",
             "--run_dir", str(tmp_path / "mw")], env={**env, "TF_CONFIG": tf_config},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=900)[0] for p in procs]  # a hang guard only
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    # the chief wrote the run dir, worker 1 its own; both hold the same model
    assert (tmp_path / "mw" / "model.keras").is_file()
    assert (tmp_path / "mw.worker1" / "model.keras").is_file()
    one, chief, other = (_weights(tmp_path / d) for d in ("one", "mw", "mw.worker1"))
    res = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "mw")]
    assert res[0]["train_examples"] == res[1]["train_examples"] == 256
    for b, c in zip(chief, other):
        np.testing.assert_array_equal(b, c)  # the workers stay in sync
    assert res[0]["spikes_per_image"] > 0  # an active net: Lee's spike-gated gradients flow
    for a, b in zip(one, chief):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-9 * max(np.abs(a).max(), 1e-3))

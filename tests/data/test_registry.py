"""The dataset registry: records, lookup errors, and a new dataset added by one ``register``
call that the loaders, splits, preprocessing and every training ``resolve`` then accept."""
import dataclasses

import numpy as np
import pytest

from tfsnn import data, runs
from tfsnn.data.preprocessing import quant_mnist, snn_mnist, to_float
from tfsnn.training import iir, proxy, quant, snn

NAME = "tiny_digits"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A 5-class 28x28 dataset stored as ``$TFSNN_DATA_DIR/tiny_digits.npz``, registered once."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 40)
    x = (rng.integers(0, 60, (40, 28, 28)) + 40 * y[:, None, None]).astype(np.uint8)
    np.savez(tmp_path / f"{NAME}.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:],
             y_test=y[30:])
    monkeypatch.setenv("TFSNN_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # --- the one place the new dataset is described ---
    record = data.register(data.Dataset(
        name=NAME, shape=(28, 28, 1), classes=5,
        preprocessing={"quant": quant_mnist, "spike_bp": snn_mnist, "iir": to_float,
                       "proxy": to_float},
        models={"quant": "all_int_lenet", "spike_bp": "spike_bp_lenet", "iir": "snn_mlp_2"}))
    yield record, (x, y)
    data.unregister(NAME)


def test_builtin_records():
    assert data.names()[:3] == ("mnist", "fashion_mnist", "cifar10")
    assert data.names("iir") == data.names("proxy") == ("mnist", "fashion_mnist")
    m, c = data.get("mnist"), data.get("cifar10")
    assert m.shape == (28, 28, 1) and m.classes == 10 and m.methods == data.METHODS
    assert m.dirs == ("mnist",) and data.get("fashion_mnist").dirs == ("fashion_mnist",
                                                                      "fashion-mnist")
    assert m.models["quant"] == "all_int_lenet" and c.models == {
        "quant": "all_int_vgg", "spike_bp": "spike_bp_vgg9", "hybrid": "vgg16"}
    assert c.input_shape("quant") == (24, 24, 3) and c.input_shape("hybrid") == (32, 32, 3)
    assert c.value_range("spike_bp") == (-1.0, 1.0) and m.value_range("spike_bp") == (0.0, 1.0)
    assert "test" in m.bundled and str(c.download) == "keras.datasets.cifar10.load_data()"
    assert "cifar10 (all_int_vgg)" in data.describe("quant")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.classes = 3
    with pytest.raises(TypeError):
        m.models["quant"] = "x"


def test_lookup_and_registration_errors():
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; known: \['cifar10', "):
        data.get("svhn")
    with pytest.raises(ValueError, match="already registered"):
        data.register(data.get("mnist"))
    with pytest.raises(ValueError, match="preprocessing keys"):
        data.Dataset(name="x", shape=(2, 2, 1), classes=2, preprocessing={"stdp": to_float})
    with pytest.raises(ValueError, match="models keys"):
        data.Dataset(name="x", shape=(2, 2, 1), classes=2, preprocessing={"iir": to_float},
                     models={"quant": "all_int_lenet"})
    with pytest.raises(ValueError, match="formats"):
        data.Dataset(name="x", shape=(2, 2, 1), classes=2, formats=("hdf5",))
    with pytest.raises(ValueError, match="does not support method 'iir'"):
        data.check_name("cifar10", "iir")


def test_registered_dataset_loads_splits_and_preprocesses(tiny):
    record, (x, y) = tiny
    assert NAME in data.names("quant") and NAME not in data.names("hybrid")
    assert record.dirs == ("tiny_digits", "tiny-digits") and "tiny_digits.npz" in record.how_to_get
    (xtr, ytr), (xte, yte) = data.load(NAME, download=False)
    assert xtr.shape == (30, 28, 28, 1) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    np.testing.assert_array_equal(xte[..., 0], x[30:])
    train, val, test = data.split(NAME, validation_examples=5, max_test_examples=4)
    assert len(train[0]) == 25 and len(val[0]) == 5 and len(test[0]) == 4
    np.testing.assert_array_equal(data.preprocess(NAME, xte, False).numpy(), xte / 256)
    np.testing.assert_array_equal(data.preprocess(NAME, xte, True, "iir").numpy(),
                                  xte.astype(np.float32) / np.float32(255))
    assert data.input_shape(NAME, "iir") == (28, 28, 1)


def test_registered_dataset_not_found_names_its_places(tiny, monkeypatch, tmp_path):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TFSNN_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load(NAME)  # no download hook: nothing to try online
    msg = str(e.value)
    assert "empty/tiny_digits.npz" in msg and "empty/tiny-digits" in msg
    assert "download" not in msg and "put tiny_digits.npz" in msg


def test_registered_dataset_resolves_in_every_method_it_supports(tiny):
    c = quant.resolve({"dataset": NAME})
    assert c["model"] == "all_int_lenet" and c["run_dir"] == f"logs/quant_{NAME}_k0_ternary"
    assert snn.resolve({"dataset": NAME})["model"] == "spike_bp_lenet"
    assert iir.resolve({"dataset": NAME})["model"] == "snn_mlp_2"
    assert iir.resolve({})["model"] == "snn_mlp_1"
    assert proxy.resolve({"dataset": NAME})["dataset"] == NAME
    with pytest.raises(runs.ConfigError, match="--dataset='tiny_digits': must be one of mnist, "
                                               "fashion_mnist, cifar10"):
        snn.resolve({"method": "hybrid", "dataset": NAME})
    with pytest.raises(runs.ConfigError, match="--dataset='cifar10': must be one of mnist, "
                                               "fashion_mnist, tiny_digits"):
        iir.resolve({"dataset": "cifar10"})


def test_registered_dataset_trains_quant(tiny):
    res = quant.train({"dataset": NAME, "epochs": 1, "batch_size": 10, "validation_examples": 0,
                       "verbose": 0, "tensorboard": False, "run_dir": "q"})
    assert res["train_examples"] == 30 and res["test_examples"] == 10
    import keras
    assert keras.models.load_model("q/model.keras").output_shape == (None, 5)

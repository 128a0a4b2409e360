"""Dataset loaders (offline search order, formats, the clear error) and preprocessing."""
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from tfsnn import data


def write_idx(path, array, gz=True):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_idx_dir(directory, n_train=12, n_test=7, seed=0, splits=("train", "test"), gz=True):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        if split not in splits:
            continue
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        img, lab = data.IDX_FILES[split]
        write_idx(directory / img, x, gz)
        write_idx(directory / lab, y, gz)
        out[split] = (x, y)
    return out


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $TFSNN_DATA_DIR, an empty working dir and an empty Keras cache."""
    monkeypatch.delenv("TFSNN_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_env_dir_idx_files(isolated, monkeypatch, gz):
    want = make_idx_dir(isolated / "env" / "mnist", gz=gz)
    monkeypatch.setenv("TFSNN_DATA_DIR", str(isolated / "env"))
    (x, y), (xt, yt) = data.load("mnist", download=False)
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0], want["train"][0])
    np.testing.assert_array_equal(yt, want["test"][1])


def test_search_order_env_before_local_data_dir(isolated, monkeypatch):
    make_idx_dir(isolated / "work" / "data" / "fashion-mnist", n_train=5, seed=1)
    (x, _), = data.load("fashion_mnist", splits=("train",), download=False)
    assert len(x) == 5  # data/<name>/ found, with the '-' spelling
    make_idx_dir(isolated / "env" / "fashion_mnist", n_train=9, seed=2)
    monkeypatch.setenv("TFSNN_DATA_DIR", str(isolated / "env"))
    (x, _), = data.load("fashion_mnist", splits=("train",), download=False)
    assert len(x) == 9  # $TFSNN_DATA_DIR wins
    assert data.search_dirs("fashion_mnist")[0] == isolated / "env" / "fashion_mnist"


def test_partial_directory_serves_only_its_splits(isolated, monkeypatch):
    make_idx_dir(isolated / "env" / "mnist", splits=("test",))
    monkeypatch.setenv("TFSNN_DATA_DIR", str(isolated / "env"))
    (xt, _), = data.load("mnist", splits=("test",), download=False)
    assert len(xt) == 7
    with pytest.raises(data.DatasetNotFoundError):
        data.load("mnist", download=False)


def test_npz_and_keras_cache(isolated):
    cache = isolated / "keras_home" / "datasets"
    cache.mkdir(parents=True)
    x = np.zeros((3, 28, 28), np.uint8)
    np.savez(cache / "mnist.npz", x_train=x, y_train=np.arange(3), x_test=x[:2], y_test=[1, 2])
    (xtr, ytr), (xte, yte) = data.load("mnist", download=False)
    assert xtr.shape == (3, 28, 28, 1) and list(yte) == [1, 2]


def test_cifar_pickles(isolated, monkeypatch):
    d = isolated / "env" / "cifar10" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": list(range(4))}, f)
    monkeypatch.setenv("TFSNN_DATA_DIR", str(isolated / "env"))
    (x, y), (xt, yt) = data.load("cifar10", download=False)
    assert x.shape == (20, 32, 32, 3) and xt.shape == (4, 32, 32, 3) and list(yt) == [0, 1, 2, 3]


def test_missing_dataset_error_lists_places_and_remedy(isolated, monkeypatch):
    (isolated / "nothing").mkdir()  # an existing, empty data dir (a missing one is an error)
    monkeypatch.setenv("TFSNN_DATA_DIR", str(isolated / "nothing"))
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("mnist", download=False)
    msg = str(e.value)
    for place in ("nothing/mnist", "data/mnist", "/usr/share/datasets/mnist", "mnist.npz"):
        assert place in msg
    assert "To get it" in msg and "TFSNN_DATA_DIR" in msg
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.load("svhn")


def test_preprocessing_mnist_and_cifar():
    x = np.full((2, 28, 28, 1), 255, np.uint8)
    np.testing.assert_allclose(data.preprocess("mnist", x, True).numpy(), 255 / 256)
    c = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    train = data.preprocess("cifar10", c, True).numpy()
    test = data.preprocess("cifar10", c, False).numpy()
    assert train.shape == test.shape == (3, 24, 24, 3)
    np.testing.assert_allclose(test.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(test.std(axis=(1, 2, 3)), 1, atol=1e-3)
    center = c[:, 4:28, 4:28].astype(np.float32)
    want = (center - center.mean(axis=(1, 2, 3), keepdims=True)) / center.std(
        axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(test, want, atol=1e-4)
    assert data.input_shape("cifar10") == (24, 24, 3)


def test_pipeline_batches():
    x = np.zeros((10, 28, 28, 1), np.uint8)
    ds = data.pipeline("fashion_mnist", x, np.arange(10), 4, training=True, seed=0)
    shapes = [b[0].shape[0] for b in ds]
    assert shapes == [4, 4, 2]


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(isolated):
    (x, y), (xt, yt) = data.load("fashion_mnist", download=False)
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert np.bincount(y).tolist() == [6000] * 10


def test_real_mnist_test_split(mnist_test_split):
    x, y = mnist_test_split
    assert x.shape == (10000, 28, 28, 1) and np.bincount(y).sum() == 10000


def test_bundled_mnist_test_split_is_the_last_offline_place(isolated, mnist_test_split):
    (x, y), = data.load("mnist", splits=("test",), download=False)
    np.testing.assert_array_equal(x, mnist_test_split[0])
    np.testing.assert_array_equal(y, mnist_test_split[1])
    assert x.dtype == np.uint8 and y.dtype == np.int64
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("mnist", splits=("train",), download=False)
    msg = str(e.value)
    for place in ("data/mnist", "/usr/share/datasets/mnist", "keras_home/datasets/mnist.npz",
                  "tfsnn.data.bundled.mnist_test_split() (bundled with tfsnn: test split only)"):
        assert place in msg
    assert msg.index("mnist.npz") < msg.index("bundled")  # the Keras cache comes first


def test_a_directory_copy_wins_over_the_bundled_split(isolated, monkeypatch):
    make_idx_dir(isolated / "env" / "mnist", splits=("test",))
    monkeypatch.setenv("TFSNN_DATA_DIR", str(isolated / "env"))
    (xt, _), = data.load("mnist", splits=("test",), download=False)
    assert len(xt) == 7


def test_npz_beside_the_directories(isolated, monkeypatch):
    env = isolated / "env"
    env.mkdir()
    x = np.ones((4, 28, 28), np.uint8)
    np.savez(env / "fashion-mnist.npz", x_train=x, y_train=np.arange(4), x_test=x[:1],
             y_test=[3])
    monkeypatch.setenv("TFSNN_DATA_DIR", str(env))
    (xtr, ytr), (xte, yte) = data.load("fashion_mnist", download=False)
    assert xtr.shape == (4, 28, 28, 1) and ytr.dtype == np.int64 and list(yte) == [3]
    assert env / "fashion_mnist.npz" in data.search_dirs("fashion_mnist")


def test_bad_splits():
    with pytest.raises(ValueError, match="splits must be"):
        data.load("mnist", splits=("val",))


def test_per_method_preprocessing_keeps_each_papers_scale():
    """quant /256, spike_bp / hybrid /255 (CIFAR [-1, 1]), iir / proxy /255: bit-identical."""
    x = np.random.default_rng(1).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    f = x.astype(np.float32)
    for method, want in (("quant", f / np.float32(256)), ("spike_bp", f / np.float32(255)),
                         ("hybrid", f / np.float32(255)), ("iir", f / np.float32(255)),
                         ("proxy", f / np.float32(255))):
        for training in (True, False):
            got = data.preprocess("fashion_mnist", x, training, method).numpy()
            np.testing.assert_array_equal(got, want, err_msg=method)
    c = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    got = data.preprocess("cifar10", c, False, "hybrid").numpy()
    np.testing.assert_array_equal(got, c.astype(np.float32) / np.float32(127.5) - 1)
    assert data.preprocess("cifar10", c, True, "spike_bp").shape == (2, 32, 32, 3)
    assert data.input_shape("cifar10", "spike_bp") == (32, 32, 3)
    with pytest.raises(ValueError, match="does not support method 'iir'"):
        data.preprocess("cifar10", c, False, "iir")


def test_split_and_epoch_maker(isolated, monkeypatch):
    make_idx_dir(isolated / "env" / "mnist", n_train=20, n_test=6)
    monkeypatch.setenv("TFSNN_DATA_DIR", str(isolated / "env"))
    train, val, test = data.split("mnist", validation_examples=4, max_test_examples=5)
    assert len(train[0]) == 16 and len(val[0]) == 4 and len(test[0]) == 5
    assert data.split("mnist")[1] is None
    make = data.epoch_maker(*train, 8, 3, lambda b: data.preprocess("mnist", b, True))
    import tensorflow as tf
    a = [y.numpy().tolist() for _, y in make(tf.constant(1, tf.int64))]
    b = [y.numpy().tolist() for _, y in make(tf.constant(1, tf.int64))]
    assert a == b and sorted(sum(a, [])) == sorted(train[1].tolist())

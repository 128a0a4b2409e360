"""Datasets, offline first, and their tf.data pipelines.

``load(name)`` looks in order in ``$TFSNN_DATA_DIR/<name>/``, ``data/<name>/`` (relative to the
working directory), ``/usr/share/datasets/<name>/`` (Debian dataset packages), the Keras cache
(``~/.keras/datasets``), and only then downloads with ``keras.datasets``. Directory names are
tried with ``_`` and ``-`` (``fashion_mnist`` / ``fashion-mnist``). A dataset found nowhere raises
``DatasetNotFoundError`` listing every place looked at and how to get it.

Accepted files per directory: the four IDX files (``train-images-idx3-ubyte[.gz]`` ...) for
MNIST / Fashion-MNIST, or ``<name>.npz`` with ``x_train, y_train, x_test, y_test``; for CIFAR-10
``cifar-10-batches-py/`` (the python pickles) or ``cifar10.npz``.

Images come back as uint8 ``[N, H, W, C]`` and labels as int64 ``[N]``.
"""
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import tensorflow as tf

DATASETS = {
    "mnist": dict(shape=(28, 28, 1), classes=10),
    "fashion_mnist": dict(shape=(28, 28, 1), classes=10),
    "cifar10": dict(shape=(32, 32, 3), classes=10),
}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
HOW_TO_GET = {
    "fashion_mnist": "apt-get install dataset-fashion-mnist (Debian), or connect to the internet "
                     "so keras.datasets can download it",
    "mnist": "put the four IDX files in data/mnist/ or $TFSNN_DATA_DIR/mnist/, or connect to the "
             "internet so keras.datasets can download it",
    "cifar10": "put cifar-10-batches-py/ in data/cifar10/ or $TFSNN_DATA_DIR/cifar10/, or connect "
               "to the internet so keras.datasets can download it",
}
CIFAR_CROP = 24


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found and none could be downloaded."""


def check_name(name):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")


def search_dirs(name):
    """The directories ``load`` looks in, in order (before the Keras cache and download)."""
    check_name(name)
    names = dict.fromkeys([name, name.replace("_", "-")])
    roots = []
    if os.environ.get("TFSNN_DATA_DIR"):
        roots.append(Path(os.environ["TFSNN_DATA_DIR"]))
    roots += [Path("data"), Path("/usr/share/datasets")]
    return [root / n for root in roots for n in names]


def keras_cache_paths(name):
    base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    return {"mnist": [base / "mnist.npz"], "fashion_mnist": [base / "fashion-mnist"],
            "cifar10": [base / "cifar-10-batches-py", base / "cifar-10-batches-py-target"]}[name]


def read_idx(path):
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(directory, stem):
    for cand in (directory / stem, directory / (stem + ".gz")):
        if cand.is_file():
            return cand
    return None


def _load_idx_split(directory, split):
    img, lab = (_find(directory, s) for s in IDX_FILES[split])
    if img is None or lab is None:
        return None
    x, y = read_idx(img), read_idx(lab).astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"{img} has {len(x)} images but {lab} has {len(y)} labels")
    return x[..., None], y


def _load_cifar_dir(directory):
    def batch(f):
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(d[b"labels"], np.int64)
    files = [directory / f"data_batch_{i}" for i in range(1, 6)]
    if not all(f.is_file() for f in files) or not (directory / "test_batch").is_file():
        return None
    parts = [batch(f) for f in files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return {"train": train, "test": batch(directory / "test_batch")}


def _load_npz(path):
    with np.load(path) as d:
        out = {}
        for split in ("train", "test"):
            if f"x_{split}" in d:
                x = d[f"x_{split}"]
                out[split] = (x[..., None] if x.ndim == 3 else x,
                              d[f"y_{split}"].reshape(-1).astype(np.int64))
        return out


def _load_dir(name, directory):
    """Splits found in one directory: ``{"train": (x, y), "test": (x, y)}`` (possibly partial)."""
    if not directory.exists():
        return {}
    if directory.is_file() and directory.suffix == ".npz":
        return _load_npz(directory)
    for npz in (directory / f"{name}.npz", directory / f"{name.replace('_', '-')}.npz"):
        if npz.is_file():
            return _load_npz(npz)
    if name == "cifar10":
        for d in (directory, directory / "cifar-10-batches-py"):
            found = _load_cifar_dir(d)
            if found:
                return found
        return {}
    return {s: v for s in IDX_FILES if (v := _load_idx_split(directory, s)) is not None}


def load(name, splits=("train", "test"), download=True):
    """Load a dataset offline first.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      splits: which splits are needed; a directory is used only if it holds all of them
        (so a directory with just the MNIST test split serves ``splits=("test",)``).
      download: allow ``keras.datasets`` to download as the last resort.
    Returns:
      A tuple with one ``(images uint8 [N,H,W,C], labels int64 [N])`` per requested split.
    Raises:
      DatasetNotFoundError: listing every place looked at and how to get the data.
    """
    check_name(name)
    bad = set(splits) - set(IDX_FILES)
    if bad or not splits:
        raise ValueError(f"splits must be a non-empty subset of {sorted(IDX_FILES)}, got {splits!r}")
    looked = []
    for directory in search_dirs(name) + keras_cache_paths(name):
        looked.append(str(directory))
        found = _load_dir(name, directory)
        if all(s in found for s in splits):
            return tuple(found[s] for s in splits)
    if download:
        looked.append(f"keras.datasets.{name}.load_data() (download)")
        try:
            import keras
            (xtr, ytr), (xte, yte) = getattr(keras.datasets, name).load_data()
            fix = (lambda x: x[..., None] if x.ndim == 3 else x)
            got = {"train": (fix(xtr), ytr.reshape(-1).astype(np.int64)),
                   "test": (fix(xte), yte.reshape(-1).astype(np.int64))}
            return tuple(got[s] for s in splits)
        except Exception as e:  # no internet here: fall through to the clear error
            looked[-1] += f" failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    raise DatasetNotFoundError(
        f"dataset {name!r} (splits {list(splits)}) not found. Looked in:\n  - "
        + "\n  - ".join(looked) + f"\nTo get it: {HOW_TO_GET[name]}. "
        "Or point $TFSNN_DATA_DIR at a directory holding <name>/ with the files.")


# --------------------------------------------------------------------------- preprocessing

def preprocess(name, images, training):
    """Spec preprocessing of a batch of uint8 images ``[B,H,W,C]`` -> float32.

    MNIST / Fashion-MNIST: ``pixels / 256`` (in [0, 0.996]). CIFAR-10: random 24x24 crop,
    horizontal flip, brightness (max delta 63), contrast [0.2, 1.8] and per-image
    standardization when training; central 24x24 crop and standardization otherwise.
    """
    x = tf.cast(images, tf.float32)
    if name != "cifar10":
        return x / 256.0
    if training:
        b = tf.shape(x)[0]
        x = tf.image.random_crop(x, tf.stack([b, CIFAR_CROP, CIFAR_CROP, 3]))
        x = tf.map_fn(_cifar_color_augment, x)
    else:
        x = tf.image.resize_with_crop_or_pad(x, CIFAR_CROP, CIFAR_CROP)
    return tf.image.per_image_standardization(x)


def _cifar_color_augment(img):
    img = tf.image.random_flip_left_right(img)
    img = tf.image.random_brightness(img, max_delta=63)
    return tf.image.random_contrast(img, 0.2, 1.8)


def input_shape(name):
    """Model input shape after preprocessing (CIFAR-10 is cropped to 24x24)."""
    check_name(name)
    return (CIFAR_CROP, CIFAR_CROP, 3) if name == "cifar10" else DATASETS[name]["shape"]


def pipeline(name, images, labels, batch_size, training, seed=None, drop_remainder=False):
    """A batched ``tf.data.Dataset`` of ``(float32 images, int64 labels)`` of dataset ``name``.

    Shuffles (reshuffling every epoch, seeded by ``seed``) when ``training``; preprocessing
    (``preprocess(name, batch, training)``) runs per batch after batching; prefetches.
    """
    fn = lambda x: preprocess(name, x, training)  # noqa: E731
    if not training:
        return batches(images, labels, batch_size, fn, drop_remainder)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return _map_batches(ds.batch(batch_size, drop_remainder=drop_remainder), fn)


def batches(images, labels, batch_size, preprocess_fn, drop_remainder=False):
    """Unshuffled ``(preprocess_fn(uint8 batch [B, ...]), labels)`` batches, prefetched (for
    evaluation with a method's own preprocessing)."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return _map_batches(ds.batch(batch_size, drop_remainder=drop_remainder), preprocess_fn)


def _map_batches(ds, fn):
    ds = ds.map(lambda x, y: (fn(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def split(name, validation_examples=0, max_train_examples=0, max_test_examples=0):
    """``(train, val_or_None, test)`` ``(images, labels)`` arrays of a dataset.

    ``val`` is the last ``validation_examples`` images of the training split (at most a fifth of
    it); ``max_*_examples`` keep the first N of the (remaining) train / test images (0 = all).
    """
    (x, y), test = load(name)
    nval = min(validation_examples, len(x) // 5)
    train, val = (x[:len(x) - nval], y[:len(x) - nval]), (x[len(x) - nval:], y[len(x) - nval:])
    if max_train_examples:
        train = tuple(a[:max_train_examples] for a in train)
    if max_test_examples:
        test = tuple(a[:max_test_examples] for a in test)
    return train, (val if nval else None), test


def split_run(c):
    """``split`` per a run config's ``dataset``, ``validation_examples``,
    ``max_train_examples`` and ``max_test_examples``."""
    return split(c["dataset"], c["validation_examples"], c["max_train_examples"],
                 c["max_test_examples"])


def epoch_maker(x, y, batch_size, seed, preprocess_fn, drop_remainder=False,
                with_indices=False):
    """``epoch (int64 tensor) -> dataset`` of one epoch's ``(preprocess_fn(images), labels)``.

    The permutation depends only on ``(seed, epoch)``, so a resumed run sees exactly the batches
    of an uninterrupted one (see ``tfsnn.runs.epoch_dataset``). ``with_indices``: call
    ``preprocess_fn(images, indices [B], epoch)`` instead, for per-image random augmentation
    keyed by (image, epoch).
    """
    x, y = tf.constant(x), tf.constant(y)
    n = int(x.shape[0])

    def make(epoch):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

        def batch(i):
            images = tf.gather(x, i)
            images = preprocess_fn(images, i, epoch) if with_indices else preprocess_fn(images)
            return images, tf.gather(y, i)
        return tf.data.Dataset.from_tensor_slices(perm).batch(
            batch_size, drop_remainder=drop_remainder).map(batch)
    return make

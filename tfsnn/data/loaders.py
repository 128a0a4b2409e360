"""Loading a registered dataset, offline first.

``load(name)`` looks in order in ``$TFSNN_DATA_DIR``, ``data/`` (relative to the working
directory) and ``/usr/share/datasets`` (Debian dataset packages), under each at every directory
name of the record (``fashion_mnist`` / ``fashion-mnist``) and at ``<dir>.npz``; then in the
Keras cache (``~/.keras/datasets``), then the files bundled with tfsnn (the MNIST test split),
and only then downloads (``keras.datasets``). A dataset found nowhere raises
``DatasetNotFoundError`` listing every place looked at and how to get it.

Formats (the record's ``formats``, tried in order in a directory): ``npz`` (``<dir>.npz`` with
``x_train, y_train, x_test, y_test``), ``idx`` (the four MNIST IDX files, optionally gzipped),
``cifar_pickles`` (``cifar-10-batches-py/`` or its files). Images come back as uint8
``[N, H, W, C]`` and labels as int64 ``[N]``.
"""
import gzip
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from tfsnn.data import registry

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found and none could be downloaded."""


class DatasetFileError(ValueError):
    """A dataset file (or ``$TFSNN_DATA_DIR``) exists but cannot be used: the message names it."""


def check_name(name, method=None):
    """The dataset's record; ValueError if ``name`` is unknown or does not support ``method``."""
    record = registry.get(name)
    if method is not None:
        record.preprocessor(method)
    return record


def search_dirs(name):
    """The places ``load`` looks in first, in order (before the Keras cache, bundled files and
    download): per root, each directory name of the record, then ``<dir>.npz`` if npz is a
    format."""
    record = registry.get(name)
    roots = []
    if os.environ.get("TFSNN_DATA_DIR"):
        roots = [Path(os.environ["TFSNN_DATA_DIR"])]
        if not roots[0].is_dir():
            raise DatasetFileError(f"$TFSNN_DATA_DIR={roots[0]}: not a directory (unset it or "
                                   "point it at a directory holding <name>/ or <name>.npz)")
    roots += [Path("data"), Path("/usr/share/datasets")]
    npz = [f"{d}.npz" for d in record.dirs] if "npz" in record.formats else []
    return [root / n for root in roots for n in (*record.dirs, *npz)]


def keras_cache_paths(name):
    """The record's ``keras_cache`` paths under ``$KERAS_HOME/datasets``."""
    base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    return [base / p for p in registry.get(name).keras_cache]


def read_idx(path):
    """An IDX file (optionally gzipped) as a numpy array; ``DatasetFileError`` naming the file
    when it is truncated or not an unsigned-byte IDX file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise DatasetFileError(f"{path}: cannot be read, damaged or truncated "
                               f"({type(e).__name__}: {e})") from None
    if len(data) < 4:
        raise DatasetFileError(f"{path}: truncated IDX file ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetFileError(f"{path} is not an unsigned-byte IDX file")
    if len(data) < 4 + 4 * ndim:
        raise DatasetFileError(f"{path}: truncated IDX file (header of {len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise DatasetFileError(f"{path}: truncated or damaged IDX file ({len(data)} bytes, the "
                               f"header {list(dims)} needs {expected})")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(directory, stem):
    for cand in (directory / stem, directory / (stem + ".gz")):
        if cand.is_file():
            return cand
    return None


def _load_idx_split(directory, split):
    """One split from IDX files in ``directory``: ``(uint8 [N, H, W, 1], int64 [N])`` or None."""
    img, lab = (_find(directory, s) for s in IDX_FILES[split])
    if img is None or lab is None:
        return None
    x, y = read_idx(img), read_idx(lab).astype(np.int64)
    if len(x) != len(y):
        raise DatasetFileError(f"{img} has {len(x)} images but {lab} has {len(y)} labels")
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
    try:
        with np.load(path) as d:
            out = {}
            for split in registry.SPLITS:
                if f"x_{split}" in d:
                    out[split] = _fix(d[f"x_{split}"], d[f"y_{split}"])
            return out
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DatasetFileError(f"{path}: cannot be read as an .npz dataset, damaged or "
                               f"truncated ({type(e).__name__}: {e})") from None


def _fix(x, y):
    """uint8 ``[N, H, W, C]`` (a channel axis added to ``[N, H, W]``), int64 labels ``[N]``."""
    x = np.asarray(x)
    return (x[..., None] if x.ndim == 3 else x), np.asarray(y).reshape(-1).astype(np.int64)


def _read_npz(record, directory):
    for d in record.dirs:
        if (directory / f"{d}.npz").is_file():
            return _load_npz(directory / f"{d}.npz")
    return {}


def _read_idx(record, directory):
    return {s: v for s in IDX_FILES if (v := _load_idx_split(directory, s)) is not None}


def _read_cifar_pickles(record, directory):
    for d in (directory, directory / "cifar-10-batches-py"):
        found = _load_cifar_dir(d)
        if found:
            return found
    return {}


READERS = {"npz": _read_npz, "idx": _read_idx, "cifar_pickles": _read_cifar_pickles}


def _load_dir(record, place):
    """Splits found at one place: ``{"train": (x, y), "test": (x, y)}`` (possibly partial)."""
    if not place.exists():
        return {}
    if place.is_file():
        return _load_npz(place) if place.suffix == ".npz" else {}
    for fmt in record.formats:
        found = READERS[fmt](record, place)
        if found:
            return found
    return {}


def _label(fn):
    name = getattr(fn, "__qualname__", None)
    return f"{fn.__module__}.{name}()" if name else str(fn)


def load(name, splits=("train", "test"), download=True):
    """Load a registered dataset offline first.

    Args:
      name: a name of ``tfsnn.data.names()`` (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``...).
      splits: which splits are needed; a place is used only if it holds all of them
        (so a directory with just the MNIST test split serves ``splits=("test",)``).
      download: allow the record's download hook (``keras.datasets``) as the last resort.
    Returns:
      A tuple with one ``(images uint8 [N,H,W,C], labels int64 [N])`` per requested split.
    Raises:
      ValueError: unknown ``name`` or bad ``splits``.
      DatasetNotFoundError: listing every place looked at and how to get the data.
    """
    record = registry.get(name)
    bad = set(splits) - set(registry.SPLITS)
    if bad or not splits:
        raise ValueError(f"splits must be a non-empty subset of {list(registry.SPLITS)}, "
                         f"got {splits!r}")
    looked = []
    for place in search_dirs(name) + keras_cache_paths(name):
        looked.append(str(place))
        found = _load_dir(record, place)
        if all(s in found for s in splits):
            return tuple(found[s] for s in splits)
    if record.bundled:
        fns = dict(record.bundled)
        looked.append(", ".join(_label(fn) for fn in fns.values())
                      + f" (bundled with tfsnn: {'/'.join(fns)} split only)")
        if all(s in fns for s in splits):
            return tuple(_fix(*fns[s]()) for s in splits)
    if download and record.download is not None:
        looked.append(f"{_label(record.download)} (download)")
        try:
            (xtr, ytr), (xte, yte) = record.download()
            got = {"train": _fix(xtr, ytr), "test": _fix(xte, yte)}
            return tuple(got[s] for s in splits)
        except Exception as e:  # no internet here: fall through to the clear error
            first = (str(e).splitlines() or [""])[0][:120]
            looked[-1] += f" failed: {type(e).__name__}: {first}"
    raise DatasetNotFoundError(
        f"dataset {name!r} (splits {list(splits)}) not found. Looked in:\n  - "
        + "\n  - ".join(looked) + f"\nTo get it: {record.how_to_get}. "
        "Or point $TFSNN_DATA_DIR at a directory holding <name>/ with the files (or <name>.npz).")

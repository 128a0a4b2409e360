"""Datasets by name: one frozen ``Dataset`` record each; adding a dataset is one
``register(Dataset(...))`` call.

A record says what the images are (uint8 ``[N, H, W, C]``, ``classes`` labels), where
``tfsnn.data.load`` finds them offline (directory names, file formats, the Keras cache, files
bundled with tfsnn), how to get them, and per training method (``METHODS``) its preprocessing
(``tfsnn.data.preprocessing``), default model and model input shape. A method is supported iff the
record has a preprocessing function for it.
"""
import types
from dataclasses import dataclass, field
from typing import Callable, Mapping

from tfsnn.data import bundled
from tfsnn.data.preprocessing import (CIFAR_CROP, quant_cifar10, quant_mnist, snn_cifar10,
                                   snn_mnist, to_float)

METHODS = ("quant", "spike_bp", "hybrid", "iir", "proxy")
FORMATS = ("npz", "idx", "cifar_pickles")  # readers in tfsnn.data.loaders
SPLITS = ("train", "test")


@dataclass(frozen=True)
class KerasDownload:
    """Download hook: ``keras.datasets.<module>.load_data()`` (``((x, y), (x, y))`` numpy)."""
    module: str

    def __call__(self):
        import keras
        return getattr(keras.datasets, self.module).load_data()

    def __str__(self):
        return f"keras.datasets.{self.module}.load_data()"


@dataclass(frozen=True)
class Dataset:
    """One dataset.

    Attributes:
      name: the ``--dataset`` value.
      shape: stored image shape ``(H, W, C)`` (uint8 pixels).
      classes: number of labels (0 .. classes - 1).
      preprocessing: ``{method: fn(uint8 images [B, H, W, C], training) -> float32}``; its keys
        are the supported methods.
      models: ``{method: default model name}`` (proxy: informational, it has one network).
      input_shapes: ``{method: model input shape}`` where preprocessing changes ``shape``.
      dirs: directory (and ``<dir>.npz``) names looked for under each data root; default
        ``name`` and ``name`` with ``-`` for ``_``.
      formats: file formats read in a directory, in order (``FORMATS``).
      how_to_get: remedy shown by ``DatasetNotFoundError``.
      keras_cache: paths under ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``).
      bundled: ``{split: fn() -> (x, y)}`` shipped with tfsnn: the last offline place.
      download: ``fn() -> ((x_train, y_train), (x_test, y_test))``, the last resort, or None.
    """
    name: str
    shape: tuple
    classes: int
    preprocessing: Mapping[str, Callable] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    input_shapes: Mapping[str, tuple] = field(default_factory=dict)
    dirs: tuple = ()
    formats: tuple = ("npz",)
    how_to_get: str = ""
    keras_cache: tuple = ()
    bundled: Mapping[str, Callable] = field(default_factory=dict)
    download: Callable = None

    def __post_init__(self):
        def fix(key, value):
            object.__setattr__(self, key, value)
        if not (isinstance(self.name, str) and self.name):
            raise ValueError(f"dataset name must be a non-empty string, got {self.name!r}")
        fix("shape", tuple(int(d) for d in self.shape))
        fix("classes", int(self.classes))
        if len(self.shape) != 3 or self.classes < 2:
            raise ValueError(f"dataset {self.name!r}: shape must be (H, W, C) and classes >= 2")
        fix("input_shapes", {m: tuple(int(d) for d in s) for m, s in self.input_shapes.items()})
        for key, allowed in (("preprocessing", METHODS), ("models", self.preprocessing),
                             ("input_shapes", self.preprocessing), ("bundled", SPLITS)):
            bad = set(getattr(self, key)) - set(allowed)
            if bad:
                raise ValueError(f"dataset {self.name!r}: {key} keys {sorted(bad)} not in "
                                 f"{sorted(allowed)}")
            fix(key, types.MappingProxyType(dict(getattr(self, key))))
        fix("formats", tuple(self.formats))
        if set(self.formats) - set(FORMATS):
            raise ValueError(f"dataset {self.name!r}: formats must be among {FORMATS}")
        spellings = tuple(dict.fromkeys([self.name, self.name.replace("_", "-")]))
        fix("dirs", tuple(self.dirs) or spellings)
        fix("keras_cache", tuple(self.keras_cache))
        fix("how_to_get", self.how_to_get or (
            f"put {self.name}.npz (x_train, y_train, x_test, y_test) in $TFSNN_DATA_DIR/ or "
            f"data/{self.name}/"))

    @property
    def methods(self):
        """The training methods this dataset supports."""
        return tuple(self.preprocessing)

    def input_shape(self, method):
        """Model input shape ``(H, W, C)`` after ``method``'s preprocessing."""
        return self.input_shapes.get(method, self.shape)

    def preprocessor(self, method):
        """``method``'s ``fn(images, training)``; ValueError if the method is unsupported."""
        if method not in self.preprocessing:
            raise ValueError(f"dataset {self.name!r} does not support method {method!r}; "
                             f"it supports {list(self.methods)}")
        return self.preprocessing[method]

    def value_range(self, method):
        """``(low, high)`` of ``method``'s preprocessed pixels (None if not declared)."""
        return getattr(self.preprocessor(method), "value_range", None)


_REGISTRY = {}


def register(record, replace=False):
    """Add a ``Dataset`` (``replace``: allow overwriting one of the same name); returns it."""
    if not isinstance(record, Dataset):
        raise TypeError(f"register() needs a Dataset record, got {type(record).__name__}")
    if record.name in _REGISTRY and not replace:
        raise ValueError(f"dataset {record.name!r} is already registered (replace=True "
                         "overwrites it)")
    _REGISTRY[record.name] = record
    return record


def unregister(name):
    """Remove a dataset (e.g. one a test registered)."""
    get(name)
    del _REGISTRY[name]


def get(name):
    """The ``Dataset`` called ``name``; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(_REGISTRY)}") from None


def names(method=None):
    """Registered dataset names in registration order (only those supporting ``method``)."""
    return tuple(n for n, r in _REGISTRY.items() if method is None or method in r.preprocessing)


def describe(method):
    """The datasets of ``method`` with their default models, for help texts:
    ``"mnist (all_int_lenet) | ... | cifar10 (all_int_vgg)"``."""
    return " | ".join(n + (f" ({m})" if (m := _REGISTRY[n].models.get(method)) else "")
                      for n in names(method))


_MNIST_LIKE = dict(
    shape=(28, 28, 1), classes=10, formats=("npz", "idx"),
    preprocessing={"quant": quant_mnist, "spike_bp": snn_mnist, "hybrid": snn_mnist,
                   "iir": to_float, "proxy": to_float},
    models={"quant": "all_int_lenet", "spike_bp": "spike_bp_lenet", "hybrid": "vgg5",
            "iir": "snn_mlp_1", "proxy": "proxy_fashion_mnist"})
_ONLINE = "or connect to the internet so keras.datasets can download it"

register(Dataset(
    name="mnist", **_MNIST_LIKE, keras_cache=("mnist.npz",), download=KerasDownload("mnist"),
    bundled={"test": bundled.mnist_test_split},
    how_to_get="put the four IDX files in data/mnist/ or $TFSNN_DATA_DIR/mnist/, " + _ONLINE))
register(Dataset(
    name="fashion_mnist", **_MNIST_LIKE, keras_cache=("fashion-mnist",),
    download=KerasDownload("fashion_mnist"),
    how_to_get="apt-get install dataset-fashion-mnist (Debian), " + _ONLINE))
register(Dataset(
    name="cifar10", shape=(32, 32, 3), classes=10, formats=("npz", "cifar_pickles"),
    preprocessing={"quant": quant_cifar10, "spike_bp": snn_cifar10, "hybrid": snn_cifar10},
    models={"quant": "all_int_vgg", "spike_bp": "spike_bp_vgg9", "hybrid": "vgg16"},
    input_shapes={"quant": (CIFAR_CROP, CIFAR_CROP, 3)},
    keras_cache=("cifar-10-batches-py", "cifar-10-batches-py-target"),
    download=KerasDownload("cifar10"),
    how_to_get="put cifar-10-batches-py/ in data/cifar10/ or $TFSNN_DATA_DIR/cifar10/, " + _ONLINE))

"""Datasets, offline first, and their tf.data pipelines.

* ``registry``: one ``Dataset`` record per dataset (``register``, ``get``, ``names``).
* ``loaders``: ``load`` (search order, file readers, ``DatasetNotFoundError``).
* ``preprocessing``: the per-method preprocessing functions; ``preprocess(name, images,
  training, method)`` (from ``pipelines``) picks the one a dataset's record names.
* ``pipelines``: ``pipeline``, ``batches``, ``split``, ``split_run``, ``epoch_maker``.
* ``bundled``: data shipped inside the package.
"""
from tfsnn.data.registry import (METHODS, Dataset, KerasDownload, describe, get, names, register,
                                 unregister)
from tfsnn.data.loaders import (IDX_FILES, DatasetNotFoundError, check_name, keras_cache_paths,
                                load, read_idx, search_dirs)
from tfsnn.data.preprocessing import CIFAR_CROP
from tfsnn.data.pipelines import (batches, epoch_maker, input_shape, pipeline, preprocess, split,
                                  split_run)

__all__ = [
    "METHODS", "Dataset", "KerasDownload", "describe", "get", "names", "register", "unregister",
    "IDX_FILES", "DatasetNotFoundError", "check_name", "keras_cache_paths", "load", "read_idx",
    "search_dirs", "CIFAR_CROP", "batches", "epoch_maker", "input_shape", "pipeline",
    "preprocess", "split", "split_run",
]

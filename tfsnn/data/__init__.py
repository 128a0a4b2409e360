"""Datasets, offline first, and their tf.data pipelines (see ``tfsnn.data.loaders``)."""
from tfsnn.data.loaders import *  # noqa: F401,F403
from tfsnn.data.loaders import _load_idx_split  # noqa: F401

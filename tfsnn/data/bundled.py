"""Data shipped inside the package (present offline, with no download and nothing outside it).

* The official MNIST test split: 10,000 images and labels, the IDX ``.gz`` files as published
  (md5 of the images file 9fb629c4189551a2d022fa330f9573f3), under ``files/mnist/``.
* The associative-memory patterns of the IIR-SNN paper (Fang et al. 2020): 10 binary patterns of
  300 channels x 300 steps, stored bit-packed (``files/associative_memory_patterns.npz``, 3.5 kB;
  the original ``associative_target.npy`` is 3.6 MB of float32 0/1).
"""
from pathlib import Path

import numpy as np

FILES = Path(__file__).resolve().parent / "files"
MNIST_DIR = FILES / "mnist"
ASSOCIATIVE_MEMORY_FILE = FILES / "associative_memory_patterns.npz"


def mnist_test_split():
    """The real MNIST test split: uint8 images ``[10000, 28, 28, 1]``, int64 labels ``[10000]``."""
    from tfsnn.data.loaders import read_idx
    x = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")[..., None]
    y = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


def associative_memory_patterns():
    """The 10 associative-memory patterns, float32 ``[10 patterns, 300 channels, 300 steps]`` in
    {0, 1}."""
    with np.load(ASSOCIATIVE_MEMORY_FILE) as f:
        shape = tuple(int(d) for d in f["shape"])
        bits = np.unpackbits(f["bits"], axis=-1, count=shape[-1])
    return bits.reshape(shape).astype(np.float32)

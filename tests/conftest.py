"""Shared test fixtures: quiet TF, the real MNIST test split, small helpers."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MNIST_T10K = SHARED / "data" / "mnist-t10k"


@pytest.fixture(scope="session")
def mnist_test_split():
    """The real MNIST test split: (uint8 [10000, 28, 28, 1], int64 [10000])."""
    from tfsnn import data
    if not (MNIST_T10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test split not found under {MNIST_T10K}")
    return data._load_idx_split(MNIST_T10K, "test")

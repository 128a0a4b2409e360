"""Shared test fixtures: quiet TF, the real MNIST test split, small helpers."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_test_split():
    """The real MNIST test split: (uint8 [10000, 28, 28, 1], int64 [10000])."""
    from tfsnn.data import bundled
    return bundled.mnist_test_split()

"""Fixtures the test modules share: scikit-learn's 8x8 digits, bundled, so every test runs offline."""

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dbn_init import DigitsDataModule


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    """The digits as a DataModule, set up for fitting: pixels in [0, 1], batches of 64."""
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def digit_pixels() -> torch.Tensor:
    """All 1,797 digits as rows of 64 pixels in [0, 1]."""
    return torch.tensor(load_digits().data / 16.0, dtype=torch.float32)


@pytest.fixture(scope="module")
def digits_split():
    """scikit-learn's digits, raw pixels 0..16, split 70/30 with a fixed seed, stratified."""
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)

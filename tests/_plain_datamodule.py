"""A LightningDataModule of the plainest kind, for tests/test_cli.py: no dbn_init base class, no
input_size or num_classes, batches of (x, y) from torch's own TensorDataset. Not a test module."""

import torch
from lightning.pytorch import LightningDataModule
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


class PlainDigits(LightningDataModule):
    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        digits = load_digits()
        x, y = torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)
        self.train, self.test = TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.test, batch_size=self.batch_size)

    test_dataloader = val_dataloader

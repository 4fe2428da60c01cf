"""Image datasets of a known pixel range: scikit-learn's digits, MNIST and Fashion-MNIST (IDX files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from sklearn.datasets import load_digits
from torch import Tensor

from ..constraints import MissingFileError, UsageError
from .base import InMemoryDataModule, RawData, ScalingName, _check_finite, base_options, carve
from .readers import _find_idx_files, _idx_folders, load_idx_dataset, offline_hint


class ImageDataModule(InMemoryDataModule):
    """Images of a fixed shape whose pixels span ``0..pixel_max``; subclasses implement ``_load``.

    The arguments are :class:`InMemoryDataModule`'s; ``scaling="unit"`` divides by ``pixel_max``.
    """

    dataset_name: str = ""
    image_shape: tuple[int, ...] = (0, 0)
    num_classes: int = 10
    pixel_max: float = 1.0

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return train images ``(N, *image_shape)``, train labels ``(N,)``, test images, test labels."""
        raise NotImplementedError

    def _read(self) -> RawData:
        train_images, train_labels, test_images, test_labels = self._load()
        x, y = self._to_tensors("train", train_images, train_labels)
        return RawData(x, y, *self._to_tensors("test", test_images, test_labels), value_range=(0.0, self.pixel_max))

    def _to_tensors(self, split: str, images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
        """Validate one split and return its pixels as stored, ``(N, D)`` float32, and ``(N,)`` int64."""
        if tuple(images.shape[1:]) != tuple(self.image_shape) or labels.shape != images.shape[:1]:
            raise UsageError(
                f"expected {split} images (N, {', '.join(map(str, self.image_shape))}) and labels "
                f"(N,), got {images.shape} and {labels.shape}; use the DataModule matching the files"
            )
        if len(images) == 0:
            raise UsageError(f"the {split} split holds no images; check the data files")
        x = torch.from_numpy(np.asarray(images, dtype=np.float32).reshape(len(images), -1))
        _check_finite(x, f"the {split} images", "fix or replace the data files")
        if x.min() < 0 or x.max() > self.pixel_max:
            raise UsageError(
                f"expected {split} pixels in [0, {self.pixel_max}], got {x.min():g}..{x.max():g}; "
                "use the DataModule matching the files"
            )
        if self.pixel_max > 1 and np.issubdtype(images.dtype, np.floating) and 0 < x.max() <= 1:
            where = f" in {self.root}" if getattr(self, "root", None) else ""
            raise UsageError(
                f"the {images.dtype} {split} images{where} look scaled to [0, 1] already (largest value "
                f"{x.max():g}), but {type(self).__name__} divides its pixels 0..{self.pixel_max:g} by "
                f"{self.pixel_max:g}; store them as 0..{self.pixel_max:g}, as the original data are"
            )
        y = torch.as_tensor(labels, dtype=torch.int64)
        if y.min() < 0 or y.max() >= self.num_classes:
            raise UsageError(f"expected {split} labels in 0..{self.num_classes - 1}, got {y.min()}..{y.max()}")
        return x, y


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled 8x8 digits (1,797 images, pixels 0..16); works offline.

    It has no official test split, so a stratified 20% (360 images) is held out with the constant
    seed 0, independent of ``split_seed``, so test scores compare across seeds; ``test_indices``
    are their rows in ``load_digits()``.
    """

    dataset_name = "digits"
    image_shape = (8, 8)
    pixel_max = 16.0

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        digits = load_digits()
        train, test = carve(len(digits.target), 0.2, digits.target)
        self.test_indices = torch.as_tensor(test)
        return digits.images[train], digits.target[train], digits.images[test], digits.target[test]


class _IDXDataModule(ImageDataModule):
    """28x28 IDX datasets read by :func:`load_idx_dataset` from ``root`` (flat or torchvision layout).

    ``download=True`` fetches them with torchvision in ``prepare_data`` (needs internet);
    ``max_file_bytes`` caps the data a file's header may declare (default: a quarter of this
    machine's memory; :func:`~dbn_init.data.readers.read_idx`); the other arguments are
    :class:`ImageDataModule`'s.
    """

    image_shape = (28, 28)
    pixel_max = 255.0
    torchvision_name = ""

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int | None = None,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        min_train_batches: int = 0,
        scaling: ScalingName = "unit",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
        max_file_bytes: int | None = None,
    ) -> None:
        super().__init__(**base_options(locals()))
        self.root, self.download, self.max_file_bytes = root, download, max_file_bytes

    def prepare_data(self) -> None:
        """Download into ``root/<Name>/raw/`` if asked and the files are not there yet.

        Safe in several processes at once: Lightning calls it on one process per node, but
        ``DBN.pretrain`` prepares the data before any Trainer exists, so under torchrun or srun
        every rank does. A lock file in ``root`` lets one download while the others wait, and they
        then find the files.
        """
        root = Path(self.root)
        if not self.download or self._downloaded():
            return
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(
                f"data.root {root} is a file; expected the folder to download "
                f"{self.torchvision_name} into (it is created if missing)"
            )
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(root / f".{self.torchvision_name}.download.lock"):
            if not self._downloaded():  # another process may have fetched the files while this one waited
                self._download()

    def _downloaded(self) -> bool:
        return any(map(_find_idx_files, _idx_folders(Path(self.root), self.torchvision_name)))

    def _download(self) -> None:
        """torchvision's download of both splits into ``root/<Name>/raw/``."""
        from torchvision import datasets  # only the online path needs torchvision

        folder = Path(self.root) / self.torchvision_name
        existed = folder.exists()
        try:
            for train in (True, False):
                getattr(datasets, self.torchvision_name)(self.root, train=train, download=True)
        except Exception as err:  # URLError, RuntimeError("Error downloading ..."), ...
            if not existed:  # what the failed download left: the next try starts clean
                shutil.rmtree(folder, ignore_errors=True)
            raise MissingFileError(
                f"downloading {self.torchvision_name} into {self.root} failed ({' '.join(str(err).split())}). "
                "Offline, pass `data.download false data.root DIR` with a folder holding the four IDX files"
                f"{offline_hint(self.torchvision_name)}"
            ) from err

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return load_idx_dataset(self.root, self.torchvision_name, self.max_file_bytes)


class MNISTDataModule(_IDXDataModule):
    """MNIST handwritten digits (60,000 train / 10,000 test, 28x28)."""

    dataset_name = "mnist"
    torchvision_name = "MNIST"


class FashionMNISTDataModule(_IDXDataModule):
    """Fashion-MNIST clothing images (60,000 train / 10,000 test, 28x28), Xiao et al. (2017)."""

    dataset_name = "fashion_mnist"
    torchvision_name = "FashionMNIST"

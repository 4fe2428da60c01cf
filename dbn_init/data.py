"""DataModules for the image datasets, and the one IDX (MNIST format) reader.

Every DataModule yields ``(x, y)`` batches, ``x`` float32 ``(B, D)`` (flattened images,
``D = H * W``) and ``y`` int64 ``(B,)``, from four splits made in ``setup``: ``pretrain_x`` (every
training image outside validation, for RBM pretraining), ``train_x`` (its labelled subset),
``val_x`` (carved from the training set with ``split_seed``) and ``test_x`` (never seeded).

Files are looked for in a flat folder (Debian's ``dataset-fashion-mnist`` installs the four IDX
files in ``/usr/share/datasets/fashion-mnist/``) and in torchvision's ``ROOT/<Name>/raw/``.
The IDX format: http://yann.lecun.com/exdb/mnist/ (section "FILE FORMATS FOR THE MNIST DATABASE").
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from filelock import FileLock
from lightning.pytorch import LightningDataModule
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

__all__ = ["ImageDataModule", "DigitsDataModule", "MNISTDataModule", "FashionMNISTDataModule",
           "read_idx", "load_idx_dataset"]

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_CHUNK = 1 << 24  # read in chunks so a lying header cannot make us allocate more than the file holds
# Data options that change where the files are read from or how fast they load, not what a model
# learns from them: runs differing only in these are the same experiment (train.py's --ckpt_path,
# compare's cells).
LOADING_OPTIONS = frozenset({"root", "download", "num_workers", "on_device"})
_FILE_FIX = ("re-download it (`--data.download true`) or restore it from where it came (Debian's Fashion-MNIST: "
             "`apt-get install --reinstall dataset-fashion-mnist`)")
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _read_at_most(stream, n: int) -> bytes:
    """Up to ``n`` bytes from ``stream``; fewer only at end of file."""
    chunks, left = [], n
    while left > 0:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, gzipped or not (detected by the magic bytes ``1f 8b``).

    Layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dims (1..4), the dims as big-endian uint32, then
    the big-endian data.

    Returns:
        ndarray of shape ``dims``, in native byte order.

    Raises:
        ValueError: for any malformed content (bad magic, unknown type code, truncated or
            over-long payload, broken gzip stream, more than 2**31 elements), naming the path.
    """
    path = Path(path)

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: {what}; the file is damaged or not an IDX file: {_FILE_FIX}")

    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if is_gzip else raw
        try:
            header = _read_at_most(stream, 4)
            if len(header) < 4:
                raise bad(f"expected a 4-byte IDX header, got {len(header)} bytes")
            if header[:2] != b"\0\0":
                raise bad(f"expected the IDX magic 00 00, got {header[:2].hex(' ')}")
            dtype = _IDX_DTYPES.get(header[2])
            if dtype is None:
                raise bad(f"expected a type code in {[hex(c) for c in _IDX_DTYPES]}, got {header[2]:#04x}")
            ndim = header[3]
            if not 1 <= ndim <= 4:
                raise bad(f"expected 1 to 4 dimensions, got {ndim}")
            dim_bytes = _read_at_most(stream, 4 * ndim)
            if len(dim_bytes) < 4 * ndim:
                raise bad(f"expected {ndim} dims ({4 * ndim} bytes), got {len(dim_bytes)} bytes")
            dims = struct.unpack(f">{ndim}I", dim_bytes)
            count = math.prod(dims)
            if count > 2**31:
                raise bad(f"expected at most 2**31 elements, the header claims dims {dims} ({count})")
            expected = count * dtype.itemsize
            payload = _read_at_most(stream, expected + 1)  # one extra byte detects trailing data
        except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            raise bad(f"expected a valid {'gzip' if is_gzip else 'IDX'} stream, reading failed ({err})") from err
    if len(payload) != expected:
        found = f"only {len(payload)}" if len(payload) < expected else "more (trailing data)"
        raise bad(f"expected {expected} bytes of data for dims {dims}, found {found}")
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_folders(root: Path, name: str) -> list[Path]:
    """Where the four IDX files may lie: flat in ``root``, or in torchvision's ``root/<name>/raw``."""
    return [root, root / name / "raw"]


def _find_idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (uncompressed preferred), or None if any is missing."""
    found = [next((p for p in (folder / s, folder / f"{s}.gz") if p.is_file()), None) for s in _IDX_FILES]
    return None if None in found else found


def offline_hint(name: str, root_option: str = "--data.root") -> str:
    """Where this dataset's files can come from without torchvision's download, for error messages
    (``root_option``: the command's option for the data folder)."""
    if name == "FashionMNIST":
        return f", e.g. `apt-get install dataset-fashion-mnist` then `{root_option} /usr/share/datasets/fashion-mnist`"
    return f" of {name} (copied from a machine where train.py's --data.download true fetched them into DIR/{name}/raw)"


def load_idx_dataset(root: str | Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the four standard IDX files from ``root/`` (flat) or ``root/<name>/raw/`` (torchvision).

    ``name`` is torchvision's folder name, ``"MNIST"`` or ``"FashionMNIST"``.

    Returns:
        ``(train_x, train_y, test_x, test_y)``: images ``(N, H, W)`` as stored (uint8 for the
        standard files), labels ``(N,)`` int64 in 0..9.

    Raises:
        FileNotFoundError: if ``root`` is missing or no folder holds all four files; the message
            lists every path looked at and how to get the files.
        ValueError: if a file is malformed, or images and labels disagree.
    """
    root = Path(root)
    folders = _idx_folders(root, name)
    files = next(filter(None, map(_find_idx_files, folders)), None) if root.is_dir() else None
    if files is None:
        looked = "\n  ".join(str(d / f"{s}{gz}") for d in folders for s in _IDX_FILES for gz in ("", ".gz"))
        problem = ("no folder holds all four files" if root.is_dir() else
                   f"data root {root} is a file, not a folder" if root.exists() else f"data root {root} does not exist")
        raise FileNotFoundError(
            f"{problem}; expected the {name} IDX files {', '.join(_IDX_FILES)} (each optionally .gz) in one "
            f"folder, flat in {root} or in torchvision's {root / name / 'raw'}. Looked at:\n  {looked}\n"
            "Fix: pass `--data.download true` (needs internet; uses torchvision), or `--data.root DIR` "
            f"pointing at a folder holding the four IDX files{offline_hint(name)}."
        )
    arrays = [read_idx(f) for f in files]
    for i in (0, 2):
        (img_path, lab_path), (images, labels) = files[i : i + 2], arrays[i : i + 2]
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(f"expected images (N, H, W) in {img_path} and labels (N,) in {lab_path}, got "
                             f"{images.shape} and {labels.shape}; {_FILE_FIX}")
        if len(images) != len(labels):
            raise ValueError(f"expected as many labels as images, got {len(images)} images in {img_path} and "
                             f"{len(labels)} labels in {lab_path}; {_FILE_FIX}")
        if not np.issubdtype(labels.dtype, np.integer) or not np.isin(labels, np.arange(10)).all():
            raise ValueError(f"expected integer labels in 0..9 in {lab_path}, got {labels.dtype} values "
                             f"{np.unique(labels)[:10].tolist()}...; {_FILE_FIX}")
    return arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3].astype(np.int64)


class TensorBatches(Dataset):
    """Map-style dataset over ``x`` ``(N, D)`` and ``y`` ``(N,)`` that serves whole batches.

    torch's fetcher calls ``__getitems__(indices)`` when it exists, so a batch of 100 costs one
    ``index_select`` (a quarter of the cost of fancy indexing on CPU) instead of 100
    ``__getitem__`` calls and a ``torch.stack``.
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.x.device)
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


class EpochShuffle(RandomSampler):
    """A random order that depends only on (seed, epoch), not on the global RNG's history.

    Lightning calls ``set_epoch`` before every epoch (as for its DistributedSampler), so a run
    resumed from a checkpoint at epoch e sees exactly the batches the uninterrupted run saw.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) % 2**63)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())


def _keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate for :class:`TensorBatches`: the batch is already stacked (module-level to pickle)."""
    return batch


class ImageDataModule(LightningDataModule):
    """Base DataModule: splits, scaling, validation and loaders; subclasses implement ``_load``.

    Args:
        batch_size: images per batch.
        val_fraction: share of the training set held out for validation, in [0, 1).
        num_labels: keep only this many labelled training images, class-balanced
            (``num_labels // num_classes`` per class, the remainder to the first classes);
            pretraining still sees every training image. None keeps all labels.
        scaling: ``"unit"`` maps pixels to [0, 1]; ``"standardize"`` then subtracts the per-pixel
            mean and divides by the per-pixel std of ``pretrain_x`` (std clamped to >= 0.05).
        binarize: threshold unit-scaled pixels at 0.5 (only with ``scaling="unit"``).
        split_seed: seeds the validation split and the labelled subset.
        num_workers: DataLoader worker processes.
        on_device: when the Trainer runs on an accelerator (a GPU) and ``num_workers`` is 0, move
            each split to the device once and cut batches there, so no batch is copied from the
            host (all of MNIST is 188 MB). Off, or on a CPU, batches are cut from host memory.
    """

    dataset_name: str = ""
    image_shape: tuple[int, int] = (0, 0)
    num_classes: int = 10
    pixel_max: float = 1.0

    def __init__(self, batch_size: int = 100, val_fraction: float = 0.1, num_labels: int | None = None,
                 scaling: Literal["unit", "standardize"] = "unit", binarize: bool = False,
                 split_seed: int = 0, num_workers: int = 0, on_device: bool = True) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"expected batch_size an integer >= 1, got {batch_size!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"expected val_fraction in [0, 1), got {val_fraction!r}; e.g. 0.1 holds out 10%")
        if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int)
                                       or num_labels < self.num_classes):
            raise ValueError(f"expected num_labels an integer >= num_classes ({self.num_classes}) so every class "
                             f"has a label, got {num_labels!r}; or pass null to keep all labels")
        if scaling not in ("unit", "standardize"):
            raise ValueError(f"expected scaling 'unit' or 'standardize', got {scaling!r}")
        if binarize and scaling == "standardize":
            raise ValueError("expected binarize with scaling='unit', got binarize=true with scaling='standardize': "
                             "binary pixels are not standardized; drop one of the two")
        if num_workers < 0:
            raise ValueError(f"expected num_workers >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.batch_size, self.val_fraction, self.num_labels = batch_size, val_fraction, num_labels
        self.scaling, self.binarize, self.split_seed, self.num_workers = scaling, binarize, split_seed, num_workers
        self.on_device = on_device
        self._device_copies: dict[tuple[int, str], Tensor] = {}  # (id of a host split, device) -> its copy
        self._ready = False

    @property
    def input_size(self) -> int:
        """Flattened image size ``D = H * W`` (known before ``setup``, for linking into the model)."""
        return self.image_shape[0] * self.image_shape[1]

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return train images ``(N, H, W)``, train labels ``(N,)``, test images, test labels."""
        raise NotImplementedError

    def _to_tensors(self, split: str, images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
        """Validate one split and return unit-scaled ``(N, D)`` float32 and ``(N,)`` int64."""
        if images.ndim != 3 or tuple(images.shape[1:]) != self.image_shape or labels.shape != images.shape[:1]:
            raise ValueError(f"expected {split} images (N, {self.image_shape[0]}, {self.image_shape[1]}) and labels "
                             f"(N,), got {images.shape} and {labels.shape}; use the DataModule matching the files")
        if len(images) == 0:
            raise ValueError(f"the {split} split holds no images; check the data files")
        x = torch.from_numpy(np.asarray(images, dtype=np.float32).reshape(len(images), -1))
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"expected finite pixels, got {bad} NaN/Inf values in the {split} split; "
                             "fix or replace the data files")
        if x.numel() and (x.min() < 0 or x.max() > self.pixel_max):
            raise ValueError(f"expected {split} pixels in [0, {self.pixel_max}], got {x.min():g}..{x.max():g}; "
                             "use the DataModule matching the files")
        if self.pixel_max > 1 and np.issubdtype(images.dtype, np.floating) and 0 < x.max() <= 1:
            where = f" in {self.root}" if getattr(self, "root", None) else ""
            raise ValueError(f"the {images.dtype} {split} images{where} look scaled to [0, 1] already (largest value "
                             f"{x.max():g}), but {type(self).__name__} divides its pixels 0..{self.pixel_max:g} by "
                             f"{self.pixel_max:g}; store them as 0..{self.pixel_max:g}, as the original data are")
        y = torch.as_tensor(labels, dtype=torch.int64)
        if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"expected {split} labels in 0..{self.num_classes - 1}, got {y.min()}..{y.max()}")
        return x / self.pixel_max, y

    def setup(self, stage: str | None = None) -> None:
        """Load, split and scale once; later calls are no-ops (Lightning calls it per stage)."""
        if self._ready:
            return
        train_images, train_labels, test_images, test_labels = self._load()
        x, y = self._to_tensors("train", train_images, train_labels)
        test_x, self.test_y = self._to_tensors("test", test_images, test_labels)

        gen = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(len(x), generator=gen)
        n_val = round(self.val_fraction * len(x))
        if n_val >= len(x):
            raise ValueError(f"expected a non-empty training split, got val_fraction={self.val_fraction} of "
                             f"{len(x)} images; lower val_fraction")
        # Indices into the loaded training set, kept so callers can check the splits are disjoint.
        self.val_indices, self.pretrain_indices = perm[:n_val].sort().values, perm[n_val:].sort().values
        pretrain_x, val_x = x[self.pretrain_indices], x[self.val_indices]
        self.pretrain_y, self.val_y = y[self.pretrain_indices], y[self.val_indices]

        if self.binarize:
            pretrain_x, val_x, test_x = ((t > 0.5).float() for t in (pretrain_x, val_x, test_x))
        # Identity for "unit", so an exporter can always apply (x / pixel_max - mean) / std.
        self.pixel_mean, self.pixel_std = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
        if self.scaling == "standardize":
            # Constant border pixels have std ~0; the floor keeps them near 0 instead of blowing up.
            self.pixel_mean, self.pixel_std = pretrain_x.mean(0), pretrain_x.std(0, unbiased=False).clamp_min(0.05)
            pretrain_x, val_x, test_x = ((t - self.pixel_mean) / self.pixel_std for t in (pretrain_x, val_x, test_x))
        self.pretrain_x, self.val_x, self.test_x = pretrain_x, val_x, test_x

        if self.num_labels is None:  # the same tensor: no second 188 MB copy for MNIST
            self.train_indices, self.train_x, self.train_y = self.pretrain_indices, pretrain_x, self.pretrain_y
        else:
            subset = self._balanced_subset(self.pretrain_y, gen)
            self.train_indices = self.pretrain_indices[subset]
            self.train_x, self.train_y = pretrain_x[subset], self.pretrain_y[subset]
        self._ready = True

    def _balanced_subset(self, labels: Tensor, gen: torch.Generator) -> Tensor:
        """Positions into ``labels`` ``(N,)`` of a class-balanced sample of ``num_labels``, sorted."""
        per_class, extra = divmod(self.num_labels, self.num_classes)
        picked = []
        for c in range(self.num_classes):
            pool = (labels == c).nonzero().squeeze(1)
            want = per_class + (c < extra)
            if len(pool) < want:
                raise ValueError(f"expected at least {want} training images of class {c} for num_labels="
                                 f"{self.num_labels}, got {len(pool)}; lower num_labels or val_fraction")
            picked.append(pool[torch.randperm(len(pool), generator=gen)[:want]])
        return torch.cat(picked).sort().values

    def _device(self) -> torch.device | None:
        """The accelerator the attached Trainer runs on, if the splits should live there."""
        trainer = self.trainer
        if not self.on_device or self.num_workers > 0 or trainer is None:
            return None
        device = trainer.strategy.root_device
        return None if device.type == "cpu" else device

    def _resident(self, t: Tensor, device: torch.device) -> Tensor:
        """``t`` on ``device``, copied once per fit-independent split (loaders are rebuilt per fit)."""
        key = (id(t), str(device))
        if key not in self._device_copies:
            self._device_copies[key] = t.to(device)
        return self._device_copies[key]

    def _loader(self, x: Tensor, y: Tensor, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        # A plain DataLoader (not a custom batch sampler) so Lightning can inject its DistributedSampler.
        # The shuffle seed is the run's seed (seed_everything), read when the loader is built.
        device = self._device()
        if device is not None:
            x, y = self._resident(x, device), self._resident(y, device)
        dataset = TensorBatches(x, y)
        sampler = EpochShuffle(dataset, seed=torch.initial_seed()) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=_keep_batch,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Labelled training batches, shuffled."""
        return self._loader(self.train_x, self.train_y, shuffle=True)

    def pretrain_dataloader(self, steps_per_batch: int = 1) -> DataLoader:
        """Every training-split image (labels included but unused by RBMs), shuffled; each batch
        holds ``steps_per_batch`` consecutive mini-batches of ``batch_size`` rows."""
        return self._loader(self.pretrain_x, self.pretrain_y, shuffle=True,
                            batch_size=self.batch_size * steps_per_batch)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_x, self.val_y, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_x, self.test_y, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split (``train.py predict`` returns its logits per batch)."""
        return self.test_dataloader()


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled 8x8 digits (1,797 images, pixels 0..16); works offline.

    It has no official test split, so a stratified 20% (360 images) is held out with the constant
    seed 0, independent of ``split_seed``, so test scores compare across seeds.
    """

    dataset_name = "digits"
    image_shape = (8, 8)
    pixel_max = 16.0

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        digits = load_digits()
        train, test = train_test_split(np.arange(len(digits.target)), test_size=0.2,
                                       stratify=digits.target, random_state=0)
        return digits.images[train], digits.target[train], digits.images[test], digits.target[test]


class _IDXDataModule(ImageDataModule):
    """28x28 IDX datasets read by :func:`load_idx_dataset` from ``root`` (flat or torchvision layout).

    ``download=True`` fetches them with torchvision in ``prepare_data`` (needs internet); the other
    arguments are :class:`ImageDataModule`'s.
    """

    image_shape = (28, 28)
    pixel_max = 255.0
    torchvision_name = ""

    def __init__(self, root: str = "data", download: bool = False, batch_size: int = 100,
                 val_fraction: float = 0.1, num_labels: int | None = None,
                 scaling: Literal["unit", "standardize"] = "unit", binarize: bool = False,
                 split_seed: int = 0, num_workers: int = 0, on_device: bool = True) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, num_labels=num_labels,
                         scaling=scaling, binarize=binarize, split_seed=split_seed, num_workers=num_workers,
                         on_device=on_device)
        self.root, self.download = root, download

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
            raise NotADirectoryError(f"--data.root {root} is a file; expected the folder to download "
                                     f"{self.torchvision_name} into (it is created if missing)")
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(root / f".{self.torchvision_name}.download.lock"):
            if not self._downloaded():  # another process may have fetched the files while this one waited
                self._download()

    def _downloaded(self) -> bool:
        return any(map(_find_idx_files, _idx_folders(Path(self.root), self.torchvision_name)))

    def _download(self) -> None:
        """torchvision's download of both splits into ``root/<Name>/raw/``."""
        from torchvision import datasets  # only the online path needs torchvision

        try:
            for train in (True, False):
                getattr(datasets, self.torchvision_name)(self.root, train=train, download=True)
        except Exception as err:  # URLError, RuntimeError("Error downloading ..."), ...
            raise RuntimeError(
                f"downloading {self.torchvision_name} into {self.root} failed ({err}). Offline, pass "
                "`--data.download false --data.root DIR` with a folder holding the four IDX files"
                f"{offline_hint(self.torchvision_name)}"
            ) from err

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return load_idx_dataset(self.root, self.torchvision_name)


class MNISTDataModule(_IDXDataModule):
    """MNIST handwritten digits (60,000 train / 10,000 test, 28x28)."""

    dataset_name = "mnist"
    torchvision_name = "MNIST"


class FashionMNISTDataModule(_IDXDataModule):
    """Fashion-MNIST clothing images (60,000 train / 10,000 test, 28x28), Xiao et al. (2017)."""

    dataset_name = "fashion_mnist"
    torchvision_name = "FashionMNIST"

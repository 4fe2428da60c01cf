"""DataModules: the bundled image datasets, your own arrays or files, any torch ``Dataset``; the IDX reader.

Every DataModule here holds its data in memory and yields ``(x, y)`` batches, ``x`` float32
``(B, D)`` (flattened inputs) and ``y`` int64 ``(B,)`` (-1 for a row without a label), from four
splits made in ``setup`` by one base class, :class:`InMemoryDataModule`:

- ``test_x``: the source's own test set, else a fraction carved with the constant seed 0 (never
  ``split_seed``, so test scores compare across seeds);
- ``val_x``: carved from the training rows with ``split_seed`` (or a source's own validation set);
- ``pretrain_x``: every other training row, plus any unlabelled extra rows (RBM pretraining);
- ``train_x``: its labelled rows, or a class-balanced ``num_labels`` of them (fine-tuning).

Scaling (``scaling``) is fitted on the pretraining rows only and applied to every split by
:meth:`InMemoryDataModule.scale`. The subclasses only read their source: :class:`ImageDataModule`
(pixels of a known range: :class:`DigitsDataModule`, :class:`MNISTDataModule`,
:class:`FashionMNISTDataModule`), :class:`ArrayDataModule` (arrays, ``.npz``/``.npy``/``.csv``
files, a loader function such as ``sklearn.datasets.load_wine``) and :class:`DatasetDataModule`
(any map-style or iterable torch ``Dataset``: ``torchvision.datasets.ImageFolder``, ``CIFAR10``...).
Each checks its own files (shape, NaN, the format's value range) with one line naming the fix;
whether values suit the first RBM's units (Bernoulli: [0, 1]) is checked by the model, not here.

IDX files are looked for in a flat folder (Debian's ``dataset-fashion-mnist`` installs the four
files in ``/usr/share/datasets/fashion-mnist/``) and in torchvision's ``ROOT/<Name>/raw/``.
The IDX format: http://yann.lecun.com/exdb/mnist/ (section "FILE FORMATS FOR THE MNIST DATABASE").
"""

from __future__ import annotations

import csv
import gzip
import importlib
import math
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from filelock import FileLock
from lightning.pytorch import LightningDataModule
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler

from .constraints import Interval, MissingFileError, Options, UsageError, validate_params

__all__ = [
    "InMemoryDataModule",
    "ImageDataModule",
    "DigitsDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "ArrayDataModule",
    "DatasetDataModule",
    "read_idx",
    "load_idx_dataset",
    "read_array_file",
]

Scaling = Literal["unit", "standardize", "none"]
# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CHUNK = 1 << 24  # read in chunks so a lying header cannot make us allocate more than the file holds
# Data options that change where the files are read from or how fast they load, not what a model
# learns from them: runs differing only in these are the same experiment (train.py's --ckpt_path,
# compare's cells).
LOADING_OPTIONS = frozenset({"root", "download", "num_workers", "on_device"})
_FILE_FIX = (
    "re-download it (`--data.download true`) or restore it from where it came (Debian's Fashion-MNIST: "
    "`apt-get install --reinstall dataset-fashion-mnist`)"
)
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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

    def bad(what: str) -> UsageError:
        return UsageError(f"{path}: {what}; the file is damaged or not an IDX file: {_FILE_FIX}")

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
        problem = (
            "no folder holds all four files"
            if root.is_dir()
            else f"data root {root} is a file, not a folder"
            if root.exists()
            else f"data root {root} does not exist"
        )
        raise MissingFileError(
            f"{problem}; expected the {name} IDX files {', '.join(_IDX_FILES)} (each optionally .gz) in one "
            f"folder, flat in {root} or in torchvision's {root / name / 'raw'}. Looked at:\n  {looked}\n"
            "Fix: pass `--data.download true` (needs internet; uses torchvision), or `--data.root DIR` "
            f"pointing at a folder holding the four IDX files{offline_hint(name)}."
        )
    arrays = [read_idx(f) for f in files]
    for i in (0, 2):
        (img_path, lab_path), (images, labels) = files[i : i + 2], arrays[i : i + 2]
        if images.ndim != 3 or labels.ndim != 1:
            raise UsageError(
                f"expected images (N, H, W) in {img_path} and labels (N,) in {lab_path}, got "
                f"{images.shape} and {labels.shape}; {_FILE_FIX}"
            )
        if len(images) != len(labels):
            raise UsageError(
                f"expected as many labels as images, got {len(images)} images in {img_path} and "
                f"{len(labels)} labels in {lab_path}; {_FILE_FIX}"
            )
        if not np.issubdtype(labels.dtype, np.integer) or not np.isin(labels, np.arange(10)).all():
            raise UsageError(
                f"expected integer labels in 0..9 in {lab_path}, got {labels.dtype} values "
                f"{np.unique(labels)[:10].tolist()}...; {_FILE_FIX}"
            )
    return arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3].astype(np.int64)


# ---------------------------------------------------------------- array files (.npz, .npy, .csv, .tsv)

_ARRAY_SUFFIXES = (".npz", ".npy", ".csv", ".tsv")


def read_array_file(
    path: str | Path, target: str | None = None, option: str = "path", target_optional: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and labels from one file, as stored (no scaling).

    - ``.npz``: the array ``x`` (features) and, if present, ``y`` (labels; ``target`` names
      another key);
    - ``.npy``: one array of features, no labels;
    - ``.csv`` / ``.tsv``: a header row naming the columns, then rows of numbers; the column
      named ``target`` holds the labels (numbers or strings), every other column is a feature.

    ``option`` is how the user named the file (``"path"``, ``"test_path"``...), for messages.
    ``target_optional``: a file without the ``target`` column or key has no labels (y None)
    instead of being refused (files of extra unlabelled rows).

    Returns:
        ``(x, y)``: x ``(N, D)`` or as stored, y ``(N,)`` or None.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: an unknown suffix, a missing key or column, a cell that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise MissingFileError(
            f"{option} {path} {state}; expected a {'/'.join(_ARRAY_SUFFIXES)} file: fix --data.{option}"
        )
    suffix = path.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise UsageError(
            f"{option} {path}: expected a file ending in {', '.join(_ARRAY_SUFFIXES)}, got {suffix!r}; "
            "convert it, e.g. np.savez(path, x=features, y=labels)"
        )
    if suffix == ".npz":
        return _read_npz(path, target, option, target_optional)
    if suffix == ".npy":
        if target is not None and not target_optional:
            raise UsageError(
                f"{option} {path}: a .npy file holds one array, so it has no column {target!r}; "
                "save features and labels together with np.savez(path, x=features, y=labels)"
            )
        return np.load(path, allow_pickle=False), None
    return _read_table(path, target, option, "\t" if suffix == ".tsv" else ",", target_optional)


def _read_npz(
    path: Path, target: str | None, option: str, target_optional: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as arrays:
        keys = list(arrays.keys())
        label_key = target or "y"
        label_key = None if label_key not in keys and (target_optional or target is None) else label_key
        if "x" not in keys or (label_key is not None and label_key not in keys):
            raise UsageError(
                f"{option} {path}: expected arrays named 'x' (features) and {label_key or 'y'!r} "
                f"(labels, optional), found {keys}; save them as np.savez(path, x=features, y=labels)"
            )
        return arrays["x"], None if label_key is None else arrays[label_key]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_table(
    path: Path, target: str | None, option: str, delimiter: str, target_optional: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV/TSV with a header row; the ``target`` column's cells are returned as strings."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
    if not rows or all(map(_is_number, rows[0])):
        raise UsageError(
            f"{option} {path}: expected a header row naming the columns, then rows of numbers; "
            f"got {'an empty file' if not rows else 'a first row of numbers'}: add a header row"
        )
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if target_optional and target not in header:
        target = None
    if target is not None and target not in header:
        raise UsageError(
            f"target {target!r} is not a column of {path}; expected one of {header}: pass "
            "--data.target with one of them, or leave it out for unlabelled data"
        )
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise UsageError(
                f"{option} {path} line {line}: expected {len(header)} cells like the header, got "
                f"{len(row)}; fix that row (a stray delimiter or a missing cell)"
            )
    label_col = header.index(target) if target is not None else None
    features = [i for i in range(len(header)) if i != label_col]
    try:
        x = np.array([[float(row[i]) for i in features] for row in body], dtype=np.float64).reshape(len(body), -1)
    except ValueError:
        line, col = next(
            (line, i) for line, row in enumerate(body, start=2) for i in features if not _is_number(row[i])
        )
        raise UsageError(
            f"{option} {path} line {line}, column {header[col]!r}: expected a number, got "
            f"{body[line - 2][col]!r}; encode the column as numbers, fill the empty cell or drop "
            "the column"
        ) from None
    labels = None if label_col is None else np.array([row[label_col].strip() for row in body])
    return x, labels


def _label_array(values: Any, where: str) -> np.ndarray:
    """Class labels as int64 (numbers, integral floats) or str; refuses fractional numbers."""
    y = np.asarray(values)
    if y.dtype.kind in "USO":
        y = y.astype(str)
        if (y == "").any():
            raise UsageError(
                f"{where}: expected a label in every row, got an empty one in row "
                f"{int(np.argmax(y == ''))} (from 0); fill it, or move unlabelled rows to unlabeled_path"
            )
        numeric = y.size > 0 and all(map(_is_number, y.tolist()))
        if not numeric:
            return y
        y = y.astype(np.float64)
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.equal(np.mod(y, 1), 0).all()):
        raise UsageError(
            f"{where}: expected class labels (integers or names), got fractional or NaN values such "
            f"as {y[np.mod(y, 1) != 0][:3].tolist()}; a classifier needs a class column as target"
        )
    if y.dtype.kind not in "biuf":
        raise UsageError(f"{where}: expected class labels (integers or names), got dtype {y.dtype}")
    return y.astype(np.int64)


def encode_labels(*label_arrays: np.ndarray | None) -> tuple[list[np.ndarray | None], list]:
    """Map labels (several arrays, e.g. train and test, of one kind) to 0..C-1 by sorted class.

    Returns:
        ``(codes, classes)``: each array as int64 codes (None stays None), and the C sorted
        classes (ints or strings), so ``classes[code]`` is the original label.
    """
    present = [y for y in label_arrays if y is not None]
    kinds = {y.dtype.kind == "U" for y in present}
    if len(kinds) > 1:
        raise UsageError(
            "expected labels of one kind, got numbers in one file and names in another; "
            "write the labels alike in every file"
        )
    classes = np.unique(np.concatenate(present)) if present else np.array([])
    codes = [None if y is None else np.searchsorted(classes, y).astype(np.int64) for y in label_arrays]
    return codes, classes.tolist()


def _check_finite(x: Tensor, where: str, fix: str) -> None:
    """One line naming how many values of ``x`` (N, D) are NaN/Inf and the first one's place."""
    bad = ~torch.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise UsageError(
            f"expected finite values in {where}, got {int(bad.sum())} NaN/Inf (the first at row {row}, "
            f"feature {col}, counting from 0); {fix}"
        )


def carve(n: int, fraction: float, labels: np.ndarray | Tensor | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``0..n-1`` split into ``(kept, held_out)``, ``ceil(fraction * n)`` held out, with the
    constant ``seed``; stratified by ``labels`` when every class has two rows, else not."""
    positions = np.arange(n)
    if labels is not None:
        try:
            return tuple(
                train_test_split(positions, test_size=fraction, stratify=np.asarray(labels), random_state=seed)
            )
        except ValueError:  # a class with one row, or fewer held-out rows than classes: cannot stratify
            pass
    return tuple(train_test_split(positions, test_size=fraction, random_state=seed))


# ---------------------------------------------------------------- batches


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


@dataclass
class RawData:
    """What a subclass reads for :meth:`InMemoryDataModule.setup`: float32 rows as stored, not scaled.

    ``train_x`` ``(N, D)`` and ``train_y`` ``(N,)`` int64 in 0..C-1 (None: no labels); ``test_*``
    and ``val_*`` likewise (``val_x`` None: carved from the training rows with ``split_seed``);
    ``unlabeled_x`` ``(M, D)``: extra rows for pretraining only. ``value_range``: the raw values
    the format maps to 0 and 1 (``(0, 255)`` for 8-bit pixels), None where the format has none.
    """

    train_x: Tensor
    train_y: Tensor | None
    test_x: Tensor
    test_y: Tensor | None
    val_x: Tensor | None = None
    val_y: Tensor | None = None
    unlabeled_x: Tensor | None = None
    value_range: tuple[float, float] | None = None


def _as_tensor(x: np.ndarray | Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if x is None else torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=dtype)


class InMemoryDataModule(LightningDataModule):
    """Base DataModule: splits, scaling and loaders of data held in memory; subclasses implement ``_read``.

    Args:
        batch_size: rows per batch.
        val_fraction: share of the training rows held out for validation, in [0, 1).
        num_labels: keep only this many labelled training rows, class-balanced
            (``num_labels // num_classes`` per class, the remainder to the first classes);
            pretraining still sees every training row. None keeps all labels.
        scaling: fitted on the pretraining rows only, then applied to every split (:meth:`scale`):

            - ``"unit"``: into [0, 1]: by the format's range where it has one (pixels 0..255
              divided by 255), else by each feature's min and max; rows of other splits are
              clipped into [0, 1];
            - ``"standardize"``: the unit-scaled values (raw values where the format has no
              range), minus each feature's mean, divided by its std (for pixels the std is
              clamped to >= 0.05, so near-constant border pixels stay near 0; a constant feature
              keeps std 1);
            - ``"none"``: the values as stored.
        binarize: threshold unit-scaled values at 0.5 (only with ``scaling="unit"``).
        split_seed: seeds the validation split and the labelled subset.
        num_workers: DataLoader worker processes.
        on_device: when the attached Trainer runs on an accelerator (a GPU) and ``num_workers`` is
            0, move each split to the device once and cut batches there, so no batch is copied
            from the host (all of MNIST is 188 MB). Off, on a CPU, or without a Trainer (loaders
            built from Python), batches are cut from host memory.

    After ``setup``: ``pretrain_x``, ``train_x``, ``val_x``, ``test_x`` ``(N, D)`` float32 and
    their ``*_y`` ``(N,)`` int64 (-1: no label); ``raw_low``, ``raw_high`` ``(D,)``: the raw
    values mapped to 0 and 1; ``feature_mean``, ``feature_std`` ``(D,)``: the standardisation of
    the unit-scaled values (0 and 1 unless ``scaling="standardize"``). A model's input is thus
    ``((raw - raw_low) / (raw_high - raw_low) - feature_mean) / feature_std``.
    """

    num_classes: int | None = None
    image_shape: tuple[int, ...] | None = None  # (H, W) grey or (C, H, W) colour; None: not images
    _parameter_constraints: dict = {
        "batch_size": [Interval(int, 1, None)],
        "val_fraction": [Interval(float, 0, 1, "left")],
        "num_labels": [None, Interval(int, 1, None)],
        "scaling": [Options(("unit", "standardize", "none"))],
        "binarize": [Options((False, True))],
        "split_seed": [Interval(int, None, None)],
        "num_workers": [Interval(int, 0, None)],
        "on_device": [Options((False, True))],
    }
    _not_hyperparameters: tuple[str, ...] = ()  # init arguments that are data, not settings (arrays, datasets)

    def __init__(
        self,
        batch_size: int = 100,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        scaling: Scaling = "unit",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        super().__init__()
        validate_params(
            type(self).__name__,
            dict(
                batch_size=batch_size,
                val_fraction=val_fraction,
                num_labels=num_labels,
                scaling=scaling,
                binarize=binarize,
                split_seed=split_seed,
                num_workers=num_workers,
                on_device=on_device,
            ),
            self._parameter_constraints,
            prefix="--data.",
        )
        if binarize and scaling != "unit":
            raise UsageError(
                f"expected binarize with scaling='unit', got binarize=true with scaling={scaling!r}: "
                "only values in [0, 1] are binarized; drop one of the two"
            )
        self.save_hyperparameters(ignore=list(self._not_hyperparameters))
        self.batch_size, self.val_fraction, self.num_labels = batch_size, val_fraction, num_labels
        self.scaling, self.binarize, self.split_seed, self.num_workers = scaling, binarize, split_seed, num_workers
        self.on_device = on_device
        self._device_copies: dict[tuple[int, str], Tensor] = {}  # (id of a host split, device) -> its copy
        self._ready = False

    @property
    def input_size(self) -> int:
        """Features per row ``D`` (the flattened image size for images)."""
        return math.prod(self.image_shape)

    def _read(self) -> RawData:
        """The source's rows, validated (shapes, NaN, the format's range) but not scaled."""
        raise NotImplementedError

    # ---------------------------------------------------------------- setup: split, scale, subset

    def setup(self, stage: str | None = None) -> None:
        """Read, split and scale once; later calls are no-ops (Lightning calls it per stage)."""
        if self._ready:
            return
        raw = self._read()
        self.labelled = raw.train_y is not None
        if self.num_labels is not None:
            _check_label_budget(self.num_labels, self.num_classes, self.labelled)
        gen = torch.Generator().manual_seed(self.split_seed)
        x, y = raw.train_x, self._labels(raw.train_y, len(raw.train_x))
        if raw.val_x is None:
            perm = torch.randperm(len(x), generator=gen)
            n_val = round(self.val_fraction * len(x))
            if n_val >= len(x):
                raise UsageError(
                    f"expected a non-empty training split, got val_fraction={self.val_fraction} of "
                    f"{len(x)} rows; lower val_fraction"
                )
            # Indices into the training rows read, kept so callers can check the splits are disjoint.
            self.val_indices, self.pretrain_indices = perm[:n_val].sort().values, perm[n_val:].sort().values
            val_raw, self.val_y = x[self.val_indices], y[self.val_indices]
            x, y = x[self.pretrain_indices], y[self.pretrain_indices]
        else:
            self.val_indices, self.pretrain_indices = torch.arange(0), torch.arange(len(x))
            val_raw, self.val_y = raw.val_x, self._labels(raw.val_y, len(raw.val_x))
        n_labelled, pretrain_raw, self.pretrain_y = len(x), x, y
        if raw.unlabeled_x is not None:  # after the labelled rows: train_x stays a view of pretrain_x
            pretrain_raw = torch.cat([x, raw.unlabeled_x])
            self.pretrain_y = torch.cat([y, self._labels(None, len(raw.unlabeled_x))])
        self.fit_scaling(pretrain_raw, raw.value_range)
        self.pretrain_x, self.val_x, self.test_x = (self.scale(t) for t in (pretrain_raw, val_raw, raw.test_x))
        self.test_y = self._labels(raw.test_y, len(raw.test_x))
        self._label_subset(n_labelled, gen)
        self._ready = True

    @staticmethod
    def _labels(y: Tensor | None, n: int) -> Tensor:
        return torch.full((n,), -1, dtype=torch.int64) if y is None else y

    def _label_subset(self, n_labelled: int, gen: torch.Generator) -> None:
        """``train_*``: the first ``n_labelled`` pretraining rows, or a balanced ``num_labels`` of them."""
        if self.num_labels is None:  # views, not copies: no second 188 MB copy for MNIST
            whole = n_labelled == len(self.pretrain_x)
            self.train_x = self.pretrain_x if whole else self.pretrain_x[:n_labelled]
            self.train_y, self.train_indices = self.pretrain_y[:n_labelled], self.pretrain_indices
            return
        subset = self._balanced_subset(self.pretrain_y[:n_labelled], gen)
        self.train_indices = self.pretrain_indices[subset]
        self.train_x, self.train_y = self.pretrain_x[subset], self.pretrain_y[subset]

    def _balanced_subset(self, labels: Tensor, gen: torch.Generator) -> Tensor:
        """Positions into ``labels`` ``(N,)`` of a class-balanced sample of ``num_labels``, sorted."""
        per_class, extra = divmod(self.num_labels, self.num_classes)
        picked = []
        for c in range(self.num_classes):
            pool = (labels == c).nonzero().squeeze(1)
            want = per_class + (c < extra)
            if len(pool) < want:
                raise UsageError(
                    f"expected at least {want} training rows of class {c} for num_labels="
                    f"{self.num_labels}, got {len(pool)}; lower num_labels or val_fraction"
                )
            picked.append(pool[torch.randperm(len(pool), generator=gen)[:want]])
        return torch.cat(picked).sort().values

    def fit_scaling(self, raw: Tensor, value_range: tuple[float, float] | None = None) -> None:
        """Fit ``raw_low``/``raw_high`` and ``feature_mean``/``feature_std`` ``(D,)`` to the rows
        ``raw`` ``(N, D)``, for ``self.scaling`` (see the class docstring)."""
        d = raw.shape[1]
        self.raw_low, self.raw_high = torch.zeros(d), torch.ones(d)
        if self.scaling != "none" and value_range is not None:
            low, high = value_range
            self.raw_low, self.raw_high = torch.full((d,), float(low)), torch.full((d,), float(high))
        elif self.scaling == "unit" and len(raw):  # no range of the format: the training rows' own
            low, high = raw.min(0).values, raw.max(0).values
            self.raw_low, self.raw_high = low, torch.where(high > low, high, low + 1)  # a constant feature maps to 0
        self.feature_mean, self.feature_std = torch.zeros(d), torch.ones(d)
        if self.scaling == "standardize":
            unit = self._unit(raw)
            mean, std = unit.mean(0), unit.std(0, unbiased=False)
            if value_range is not None:  # pixels in [0, 1]: constant border pixels have std ~0
                std = std.clamp_min(0.05)
            else:  # any range: only a constant feature (std at float32 noise) is left unscaled
                std = torch.where(std > 1e-6 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
            self.feature_mean, self.feature_std = mean, std

    def _unit(self, raw: Tensor) -> Tensor:
        x = raw if not self.raw_low.any() else raw - self.raw_low
        span = self.raw_high - self.raw_low
        return x if bool((span == 1).all()) else x / span

    def scale(self, raw: Tensor | np.ndarray) -> Tensor:
        """Rows as stored ``(N, D)`` -> model inputs ``(N, D)`` float32, by the scaling fitted in ``setup``
        (e.g. to apply a trained model to new rows of the same source)."""
        x = self._unit(torch.as_tensor(raw, dtype=torch.float32))
        if self.scaling == "unit":
            x = x.clamp(0.0, 1.0)  # rows outside the training rows' range (a no-op for pixels)
            if self.binarize:
                x = (x > 0.5).float()
        elif self.scaling == "standardize":
            x = (x - self.feature_mean) / self.feature_std
        return x

    # ---------------------------------------------------------------- loaders

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
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_keep_batch,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Labelled training batches, shuffled."""
        if not self.labelled:
            raise UsageError(
                f"this {type(self).__name__} has no labels, so it serves pretraining only "
                "(pretrain_dataloader); to fine-tune, give it labels (a `target` column, `y`, or a "
                "dataset of (input, label) pairs)"
            )
        return self._loader(self.train_x, self.train_y, shuffle=True)

    def pretrain_dataloader(self, steps_per_batch: int = 1) -> DataLoader:
        """Every pretraining row (labels, -1 where none, included but unused by RBMs), shuffled; each
        batch holds ``steps_per_batch`` consecutive mini-batches of ``batch_size`` rows."""
        return self._loader(
            self.pretrain_x, self.pretrain_y, shuffle=True, batch_size=self.batch_size * steps_per_batch
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_x, self.val_y, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_x, self.test_y, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split (``train.py predict`` returns its logits per batch)."""
        return self.test_dataloader()


def _check_label_budget(num_labels: int, num_classes: int | None, labelled: bool = True) -> None:
    if not labelled:
        raise UsageError(
            f"expected labelled data for num_labels={num_labels}, got rows without labels; "
            "pass null, or give the data labels"
        )
    if num_classes is not None and num_labels < num_classes:
        raise UsageError(
            f"expected num_labels an integer >= num_classes ({num_classes}) so every class has a "
            f"label, got {num_labels!r}; or pass null to keep all labels"
        )


# ---------------------------------------------------------------- images of a known format


class ImageDataModule(InMemoryDataModule):
    """Images of a fixed shape whose pixels span ``0..pixel_max``; subclasses implement ``_load``.

    The arguments are :class:`InMemoryDataModule`'s; ``scaling="unit"`` divides by ``pixel_max``.
    """

    dataset_name: str = ""
    image_shape: tuple[int, ...] = (0, 0)
    num_classes: int = 10
    pixel_max: float = 1.0

    def __init__(
        self,
        batch_size: int = 100,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        scaling: Scaling = "unit",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            num_labels=num_labels,
            scaling=scaling,
            binarize=binarize,
            split_seed=split_seed,
            num_workers=num_workers,
            on_device=on_device,
        )
        if num_labels is not None:
            _check_label_budget(num_labels, self.num_classes)

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return train images ``(N, *image_shape)``, train labels ``(N,)``, test images, test labels."""
        raise NotImplementedError

    def _read(self) -> RawData:
        train_images, train_labels, test_images, test_labels = self._load()
        x, y = self._to_tensors("train", train_images, train_labels)
        test_x, test_y = self._to_tensors("test", test_images, test_labels)
        return RawData(x, y, test_x, test_y, value_range=(0.0, self.pixel_max))

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
    seed 0, independent of ``split_seed``, so test scores compare across seeds.
    """

    dataset_name = "digits"
    image_shape = (8, 8)
    pixel_max = 16.0

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        digits = load_digits()
        train, test = carve(len(digits.target), 0.2, digits.target)
        return digits.images[train], digits.target[train], digits.images[test], digits.target[test]


class _IDXDataModule(ImageDataModule):
    """28x28 IDX datasets read by :func:`load_idx_dataset` from ``root`` (flat or torchvision layout).

    ``download=True`` fetches them with torchvision in ``prepare_data`` (needs internet); the other
    arguments are :class:`ImageDataModule`'s.
    """

    image_shape = (28, 28)
    pixel_max = 255.0
    torchvision_name = ""

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 100,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        scaling: Scaling = "unit",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            num_labels=num_labels,
            scaling=scaling,
            binarize=binarize,
            split_seed=split_seed,
            num_workers=num_workers,
            on_device=on_device,
        )
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
            raise NotADirectoryError(
                f"--data.root {root} is a file; expected the folder to download "
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


# ---------------------------------------------------------------- your own arrays and files


@dataclass
class _Arrays:
    """An :class:`ArrayDataModule`'s rows as read: features ``(N, D)`` float32, label codes int64."""

    x: Tensor
    y: Tensor | None
    test_x: Tensor | None
    test_y: Tensor | None
    unlabeled_x: Tensor | None
    predict_x: Tensor | None
    classes: list | None
    image_shape: tuple[int, ...] | None


def _features(values: Any, where: str, n_features: int | None = None) -> tuple[Tensor, tuple[int, ...]]:
    """Rows of numbers ``(N, D)`` float32, checked; arrays ``(N, C, H, W)``/``(N, H, W)`` are flattened
    (returned shape: one row's shape, ``(D,)`` for a table)."""
    try:
        x = torch.as_tensor(
            values.detach().cpu() if isinstance(values, Tensor) else np.asarray(values), dtype=torch.float32
        )
    except (TypeError, ValueError, RuntimeError) as err:
        raise UsageError(
            f"{where}: expected an array of numbers, got {type(values).__name__} ({err}); "
            "convert the features to numbers first"
        ) from err
    if x.ndim < 2 or len(x) == 0:
        raise UsageError(
            f"{where}: expected rows of features (N, D) with N >= 1, got shape {tuple(x.shape)}; "
            "one feature per row: x.reshape(-1, 1)"
        )
    shape, x = tuple(x.shape[1:]), x.reshape(len(x), -1)
    if n_features is not None and x.shape[1] != n_features:
        raise UsageError(
            f"{where}: expected {n_features} features per row, like the training rows, got "
            f"{x.shape[1]}; give every file the same feature columns"
        )
    _check_finite(x, where, "fill or drop those values (e.g. impute each feature's mean) before loading")
    return x, shape


def _call_loader(name: str) -> tuple[Any, Any, list | None]:
    """``(x, y, class names)`` from the function named ``name`` (a Bunch, ``(X, y)`` or ``X``)."""
    module, _, attr = name.rpartition(".")
    try:
        function = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise UsageError(
            f"loader {name!r}: expected the dotted name of a function returning (X, y) or a Bunch with "
            f"data and target, e.g. 'sklearn.datasets.load_wine'; importing it failed ({err})"
        ) from err
    out = function()
    if hasattr(out, "data"):  # a scikit-learn Bunch
        names = getattr(out, "target_names", None)
        return out.data, getattr(out, "target", None), None if names is None else [str(n) for n in names]
    if isinstance(out, tuple) and len(out) == 2:
        return out[0], out[1], None
    return out, None, None


class ArrayDataModule(InMemoryDataModule):
    """Your own rows of features: in-memory arrays, a file, or a loader function.

    Exactly one source: ``x`` (and ``y``) from Python (numpy arrays, torch tensors, nested lists;
    ``(N, C, H, W)`` or ``(N, H, W)`` images are flattened and their shape kept); ``path`` to a
    ``.npz`` (keys ``x``, optional ``y``), ``.npy`` (features only) or ``.csv``/``.tsv`` file (a
    header row; the ``target`` column holds the labels, every other column is a feature; see
    :func:`read_array_file`); or ``loader``, the dotted name of a function returning a
    scikit-learn Bunch (``data``, ``target``), ``(X, y)`` or ``X``, e.g.
    ``sklearn.datasets.load_wine``: what the CLI needs for data that ship with a package, without
    writing a file first. Labels (numbers or strings) become 0..C-1 in sorted order; ``classes``
    keeps the originals (a Bunch's ``target_names``). Without labels the module serves
    pretraining only (``train_dataloader`` refuses with the fix).

    Args:
        test_path, x_test, y_test: the test rows (a file like ``path``, or arrays); without them
            ``test_fraction`` of the rows is held out, stratified, with the constant seed 0
            (not ``split_seed``), so test scores compare across seeds.
        unlabeled_path, x_unlabeled: extra rows for pretraining only (a ``target`` column in the
            file is ignored).
        predict_path: rows for ``predict_dataloader`` (else it serves the test split).
        image_shape: ``(H, W)`` or ``(C, H, W)`` of one row when the features are flattened
            images, so pictures show them as such.
        scaling: ``"standardize"`` by default: features of arbitrary ranges and units have no
            natural [0, 1], min-max scaling lets one outlier squash a feature, and a
            Gaussian-Bernoulli first RBM (``visible_units: gaussian``) models unit-variance
            inputs (Hinton 2010, "A practical guide to training RBMs", section 13.2). Pass
            ``"unit"`` (per-feature min-max, val/test clipped into [0, 1]) for a Bernoulli first RBM.
        The other arguments are :class:`InMemoryDataModule`'s.

    The rows are read once, in ``__init__``: the CLI links ``input_size`` and ``num_classes`` into
    the model as soon as it has built this object, a CSV's sizes need all its rows anyway, and a
    file's problem (a missing file, a wrong ``target``) is then refused as one line at
    construction, where the CLI reports it as a usage error.
    """

    _not_hyperparameters = ("x", "y", "x_test", "y_test", "x_unlabeled")
    _parameter_constraints = {
        **InMemoryDataModule._parameter_constraints,
        "test_fraction": [Interval(float, 0, 1, "neither")],
    }
    # (options of which at most one may be given, is one required); then which option another needs.
    _EXCLUSIVE = (
        (("x", "path", "loader"), True),
        (("test_path", "x_test"), False),
        (("unlabeled_path", "x_unlabeled"), False),
    )
    _NEEDS = {"y": "x", "y_test": "x_test", "target": "path"}

    def __init__(
        self,
        x: Any = None,
        y: Any = None,
        *,
        path: str | None = None,
        target: str | None = None,
        loader: str | None = None,
        test_path: str | None = None,
        unlabeled_path: str | None = None,
        predict_path: str | None = None,
        x_test: Any = None,
        y_test: Any = None,
        x_unlabeled: Any = None,
        image_shape: tuple[int, ...] | None = None,
        test_fraction: float = 0.2,
        batch_size: int = 100,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        scaling: Scaling = "standardize",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        sources = dict(
            x=x,
            y=y,
            path=path,
            target=target,
            loader=loader,
            test_path=test_path,
            unlabeled_path=unlabeled_path,
            predict_path=predict_path,
            x_test=x_test,
            y_test=y_test,
            x_unlabeled=x_unlabeled,
        )
        self._check_sources({k: v is not None for k, v in sources.items()})
        validate_params(
            type(self).__name__, dict(test_fraction=test_fraction), self._parameter_constraints, prefix="--data."
        )
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            num_labels=num_labels,
            scaling=scaling,
            binarize=binarize,
            split_seed=split_seed,
            num_workers=num_workers,
            on_device=on_device,
        )
        self._sources, self.test_fraction = sources, test_fraction
        self._image_shape = None if image_shape is None else tuple(image_shape)
        self.arrays = self._read_arrays()  # the rows as read

    @classmethod
    def _check_sources(cls, given: dict[str, bool]) -> None:
        for names, required in cls._EXCLUSIVE:
            chosen = [n for n in names if given[n]]
            if len(chosen) > 1 or (required and not chosen):
                raise UsageError(
                    f"{cls.__name__}: expected {'exactly' if required else 'at most'} one of "
                    f"{', '.join(names)}, got {chosen or 'none'}; pass one of them"
                )
        for name, needed in cls._NEEDS.items():
            if given[name] and not given[needed]:
                raise UsageError(f"{cls.__name__}: {name} is given without {needed}; pass {needed} too, or drop {name}")

    # ---------------------------------------------------------------- reading, once

    @property
    def input_size(self) -> int:
        return self.arrays.x.shape[1]

    @property
    def num_classes(self) -> int | None:
        """Number of classes; None for unlabelled data."""
        return None if self.arrays.classes is None else len(self.arrays.classes)

    @property
    def classes(self) -> list | None:
        """The original label of each class code 0..C-1 (ints or strings); None for unlabelled data."""
        return self.arrays.classes

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return self.arrays.image_shape

    def _source(
        self, option: str, array_option: str | None = None, labels_option: str | None = None
    ) -> tuple[Any, Any, str] | None:
        """``(x, y, where)`` of one source, as given or as read from its file; None if not given.
        Only ``path`` must hold the ``target`` column; in the other files it may be absent."""
        src = self._sources
        if array_option is not None and src[array_option] is not None:
            return src[array_option], None if labels_option is None else src[labels_option], array_option
        if src[option] is None:
            return None
        x, y = read_array_file(src[option], src["target"], option, target_optional=option != "path")
        return x, y, f"{option} {src[option]}"

    def _read_arrays(self) -> _Arrays:
        src = self._sources
        names = None
        if src["loader"] is not None:
            x, y, names = _call_loader(src["loader"])
            where = f"loader {src['loader']}"
        else:
            x, y, where = self._source("path", "x", "y")
        x, shape = _features(x, where)
        y = None if y is None else _label_array(y, f"the labels of {where}")
        if y is not None and len(y) != len(x):
            raise UsageError(f"{where}: expected one label per row, got {len(y)} labels for {len(x)} rows")
        test = self._source("test_path", "x_test", "y_test")
        test_x, test_y = self._side_rows(test, x.shape[1], labelled=y is not None)
        unlabeled_x, _ = self._side_rows(self._source("unlabeled_path", "x_unlabeled"), x.shape[1], labelled=False)
        predict_x, _ = self._side_rows(self._source("predict_path"), x.shape[1], labelled=False)
        (y, test_y), classes = encode_labels(y, test_y)
        if names is not None and classes == list(range(len(names))):
            classes = names
        return _Arrays(
            x,
            _as_tensor(y, torch.int64),
            test_x,
            _as_tensor(test_y, torch.int64),
            unlabeled_x,
            predict_x,
            classes if y is not None else None,
            self._check_image_shape(shape, x.shape[1]),
        )

    @staticmethod
    def _side_rows(source: tuple | None, n_features: int, labelled: bool) -> tuple[Tensor | None, np.ndarray | None]:
        """Test, unlabelled or predict rows: features like the training rows', labels if ``labelled``."""
        if source is None:
            return None, None
        x, y, where = source
        x, _ = _features(x, where, n_features)
        if not labelled:
            return x, None
        if y is None:
            raise UsageError(
                f"{where}: expected labels for the test rows, as the training rows have; add the "
                "target column (or pass y_test)"
            )
        y = _label_array(y, f"the labels of {where}")
        if len(y) != len(x):
            raise UsageError(f"{where}: expected one label per row, got {len(y)} labels for {len(x)} rows")
        return x, y

    def _check_image_shape(self, shape: tuple[int, ...], n_features: int) -> tuple[int, ...] | None:
        image_shape = self._image_shape or (shape if len(shape) > 1 else None)
        if image_shape is not None and len(image_shape) == 3 and image_shape[0] == 1:
            image_shape = image_shape[1:]  # one channel: grey (H, W)
        if image_shape is not None and math.prod(image_shape) != n_features:
            raise UsageError(
                f"expected image_shape whose product is the {n_features} features per row, got "
                f"{image_shape} ({math.prod(image_shape)}); fix --data.image_shape or leave it out"
            )
        return image_shape

    def _read(self) -> RawData:
        a = self.arrays
        x, y, test_x, test_y = a.x, a.y, a.test_x, a.test_y
        if test_x is None:
            keep, held = (torch.as_tensor(i) for i in carve(len(x), self.test_fraction, y))
            # Source rows of test_x, and of the training rows that val_indices and pretrain_indices index.
            self.test_indices, self.source_indices = held, keep
            test_x, test_y = x[held], None if y is None else y[held]
            x, y = x[keep], None if y is None else y[keep]
        return RawData(x, y, test_x, test_y, unlabeled_x=a.unlabeled_x)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.predict_x = None if self.arrays.predict_x is None else self.scale(self.arrays.predict_x)

    def predict_dataloader(self) -> DataLoader:
        """The ``predict_path`` rows (labels -1), else the test split."""
        if self.predict_x is None:
            return self.test_dataloader()
        return self._loader(self.predict_x, self._labels(None, len(self.predict_x)), shuffle=False)


# ---------------------------------------------------------------- any torch Dataset

# PIL modes whose array is already what a model should see; "LA" keeps its grey, the rest become RGB.
_PIL_KEPT_MODES = ("1", "L", "RGB", "I", "I;16", "F")


def _input_array(x: Any) -> np.ndarray:
    """One input in torch's layout: ``(C, H, W)`` colour, ``(H, W)`` grey, ``(D,)`` features.

    PIL images and 3-D numpy arrays whose last axis has 1, 3 or 4 channels (and whose first axis
    does not) are channels-last and are transposed; tensors are taken as ``(C, H, W)``. One channel
    is dropped: ``(1, H, W)`` -> ``(H, W)``.
    """
    pil = sys.modules.get("PIL.Image")  # a PIL image can only exist once PIL is imported
    if pil is not None and isinstance(x, pil.Image):
        if x.mode not in _PIL_KEPT_MODES:
            x = x.convert("L" if x.mode in ("LA", "La") else "RGB")
        x = np.asarray(x)
        x = x.transpose(2, 0, 1) if x.ndim == 3 else x
    elif isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    else:
        x = np.asarray(x)
        if x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3, 4):
            x = x.transpose(2, 0, 1)
    return x[0] if x.ndim == 3 and x.shape[0] == 1 else x


def _class_label(y: Any) -> int:
    label = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if label.ndim != 0 or label.dtype.kind not in "biu":
        raise UsageError(
            f"expected an integer class label per item, got {y!r}; a dataset of (input, label) pairs "
            "is needed (for torchvision datasets, no target_transform that changes the labels)"
        )
    return int(label)


def _convert_items(items: list) -> tuple[list[np.ndarray], list[int | None]]:
    """Collate for reading a Dataset: each item's input as an array and its label (None if the
    item is an input alone). Module-level, so worker processes can pickle it."""
    pairs = [item if isinstance(item, (tuple, list)) else (item,) for item in items]
    return [_input_array(p[0]) for p in pairs], [_class_label(p[1]) if len(p) > 1 else None for p in pairs]


def _materialise(dataset: Dataset, what: str, num_workers: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Every item of ``dataset`` in memory: inputs ``(N, *shape)`` as stored, labels ``(N,)`` or None.

    An IterableDataset is read in one pass (in this process: workers would each yield all of it)."""
    workers = 0 if isinstance(dataset, IterableDataset) else num_workers
    xs, ys = [], []
    for inputs, labels in DataLoader(dataset, batch_size=256, num_workers=workers, collate_fn=_convert_items):
        xs += inputs
        ys += labels
    if not xs:
        raise UsageError(f"{what} holds no items; check its root or arguments")
    odd = next((i for i, a in enumerate(xs) if a.shape != xs[0].shape or a.dtype.kind not in "biuf"), None)
    if odd is not None:
        raise UsageError(
            f"{what}: expected every input as numbers of one shape, got {xs[0].shape} {xs[0].dtype} "
            f"for item 0 and {xs[odd].shape} {xs[odd].dtype} for item {odd}; give the dataset a "
            "transform making them alike, e.g. torchvision.transforms.Resize((32, 32))"
        )
    if len({y is None for y in ys}) > 1:
        raise UsageError(f"{what}: expected every item as (input, label) or every item as an input alone, got both")
    return np.stack(xs), None if ys[0] is None else np.asarray(ys, dtype=np.int64)


def _value_range(x: np.ndarray) -> tuple[float, float] | None:
    """The raw range of a dtype (``(0, 255)`` for uint8 pixels); float inputs all in [0, 1]
    (torchvision's ToTensor) are already in range; other inputs have none."""
    if x.dtype == np.bool_:
        return (0.0, 1.0)
    if np.issubdtype(x.dtype, np.unsignedinteger):
        return (0.0, float(np.iinfo(x.dtype).max))
    if np.issubdtype(x.dtype, np.floating) and x.min() >= 0 and x.max() <= 1:
        return (0.0, 1.0)
    return None


@dataclass
class _Items:
    """A :class:`DatasetDataModule`'s datasets in memory: flattened float32 rows, int64 labels."""

    splits: dict[str, tuple[Tensor, Tensor | None]]  # "train", and "test"/"val" where given
    image_shape: tuple[int, ...] | None
    value_range: tuple[float, float] | None
    num_classes: int | None


class DatasetDataModule(InMemoryDataModule):
    """Any torch ``Dataset`` of ``(input, label)`` items (or inputs alone: pretraining only), in memory.

    From Python, pass the object; in YAML, a class path and its init args, so every torchvision
    dataset works::

        data:
          class_path: dbn_init.DatasetDataModule
          init_args:
            dataset:
              class_path: torchvision.datasets.ImageFolder
              init_args: {root: data/patches}

    Inputs may be PIL images, numpy arrays or tensors (see :func:`_input_array` for the layouts);
    they are flattened (3 x 32 x 32 -> 3072 features) and ``image_shape`` keeps ``(C, H, W)``
    for colour, ``(H, W)`` for grey, so pictures show them as such. Under ``scaling="unit"``
    8-bit inputs (PIL, uint8) are divided by 255, float inputs already in [0, 1] are kept, and
    others are min-max scaled per feature. ``num_classes`` is ``len(dataset.classes)`` where the
    dataset has ``classes`` (torchvision's do), else the largest label + 1.

    Args:
        dataset: the training items (map-style, or an IterableDataset read in one pass).
        test_dataset: the test items; without it ``test_fraction`` of ``dataset`` is held out,
            stratified, with the constant seed 0 (not ``split_seed``), so ``test`` always works.
        val_dataset: the validation items; without it ``val_fraction`` is carved with ``split_seed``.
        The other arguments are :class:`InMemoryDataModule`'s; ``num_workers`` also reads the
        datasets in parallel (PNG decoding).

    Every item is read once, in ``__init__`` (the CLI links ``input_size`` and ``num_classes``
    into the model as soon as it has built this object, and a dataset's problem is then refused
    at construction, as one line); this suits data that fit in memory (CIFAR-10's 50,000 images:
    600 MB as float32).
    """

    _not_hyperparameters = ("dataset", "test_dataset", "val_dataset")
    _parameter_constraints = {
        **InMemoryDataModule._parameter_constraints,
        "test_fraction": [Interval(float, 0, 1, "neither")],
    }

    def __init__(
        self,
        dataset: Dataset,
        *,
        test_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        test_fraction: float = 0.2,
        batch_size: int = 100,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        scaling: Scaling = "unit",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        validate_params(
            type(self).__name__, dict(test_fraction=test_fraction), self._parameter_constraints, prefix="--data."
        )
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            num_labels=num_labels,
            scaling=scaling,
            binarize=binarize,
            split_seed=split_seed,
            num_workers=num_workers,
            on_device=on_device,
        )
        self.datasets = {"train": dataset, "test": test_dataset, "val": val_dataset}
        self.test_fraction = test_fraction
        self.items = self._read_items()  # the datasets in memory

    @property
    def input_size(self) -> int:
        return self.items.splits["train"][0].shape[1]

    @property
    def num_classes(self) -> int | None:
        return self.items.num_classes

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return self.items.image_shape

    def _read_items(self) -> _Items:
        arrays = {
            split: _materialise(ds, f"the {split} dataset ({type(ds).__name__})", self.num_workers)
            for split, ds in self.datasets.items()
            if ds is not None
        }
        x, y = arrays["train"]
        for split, (other, _) in arrays.items():
            if other.shape[1:] != x.shape[1:]:
                raise UsageError(
                    f"the {split} dataset's inputs have shape {other.shape[1:]}, the training "
                    f"dataset's {x.shape[1:]}; expected one shape: give both the same transform"
                )
        labelled = y is not None
        classes = getattr(self.datasets["train"], "classes", None)
        num_classes = (
            (
                len(classes)
                if classes is not None
                else 1 + max(int(a[1].max()) for a in arrays.values() if a[1] is not None)
            )
            if labelled
            else None
        )
        splits = {}
        for split, (inputs, labels) in arrays.items():
            rows = torch.from_numpy(inputs.reshape(len(inputs), -1).astype(np.float32))
            _check_finite(rows, f"the {split} dataset", "fix the dataset or its transform")
            if labelled and (labels is None or labels.min() < 0 or labels.max() >= num_classes):
                raise UsageError(
                    f"the {split} dataset: expected labels in 0..{num_classes - 1}, got "
                    f"{'none' if labels is None else f'{labels.min()}..{labels.max()}'}; fix its labels"
                )
            splits[split] = (rows, None if not labelled else torch.from_numpy(labels))
        shape = tuple(x.shape[1:])
        return _Items(splits, shape if len(shape) > 1 else None, _value_range(x), num_classes)

    def _read(self) -> RawData:
        splits = self.items.splits
        x, y = splits["train"]
        if "test" in splits:
            test_x, test_y = splits["test"]
        else:
            keep, held = (torch.as_tensor(i) for i in carve(len(x), self.test_fraction, y))
            # Source rows of test_x, and of the training rows that val_indices and pretrain_indices index.
            self.test_indices, self.source_indices = held, keep
            test_x, test_y = x[held], None if y is None else y[held]
            x, y = x[keep], None if y is None else y[keep]
        val_x, val_y = splits.get("val", (None, None))
        return RawData(x, y, test_x, test_y, val_x=val_x, val_y=val_y, value_range=self.items.value_range)

"""Any torch ``Dataset`` of ``(input, label)``: torchvision's ``ImageFolder``, ``CIFAR10``, ..."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ..constraints import UsageError
from .base import InMemoryDataModule, RawData, ScalingName, _check_finite, base_options

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


def _check_alike(what: str, i: int, x: np.ndarray, y: int | None, first: tuple) -> None:
    """Item ``i`` of ``what`` is numbers of item 0's shape and dtype, and labelled as item 0 is
    (``first``: item 0's shape, dtype and whether it has a label)."""
    shape, dtype, labelled = first
    if x.shape != shape or x.dtype != dtype or x.dtype.kind not in "biuf" or (y is not None) != labelled:
        label, first_label = ("with" if y is not None else "without"), ("with" if labelled else "without")
        raise UsageError(
            f"{what}: item {i} is {x.shape} {x.dtype} {label} a label, item 0 {shape} {dtype} {first_label} one; "
            "expected every item alike: give the dataset a transform making them so, "
            "e.g. torchvision.transforms.Resize((32, 32))"
        )


def _item(item: Any) -> tuple[np.ndarray, int | None]:
    """One source item as (input array in torch's layout, label or None)."""
    pair = item if isinstance(item, (tuple, list)) else (item,)
    return _input_array(pair[0]), _class_label(pair[1]) if len(pair) > 1 else None


def _convert_items(items: list) -> tuple[tuple[np.ndarray, ...], tuple[int | None, ...]]:
    """Collate for reading a Dataset: each item's input as an array and its label (None if the
    item is an input alone). Module-level, so worker processes can pickle it."""
    return tuple(zip(*map(_item, items)))


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
    for i, (x, y) in enumerate(zip(xs, ys)):
        _check_alike(what, i, x, y, (xs[0].shape, xs[0].dtype, ys[0] is not None))
    return np.stack(xs), None if ys[0] is None else np.asarray(ys, dtype=np.int64)


def _value_range(dtype: np.dtype, extremes: Callable[[], tuple[float, float]]) -> tuple[float, float] | None:
    """The raw range of a dtype (``(0, 255)`` for uint8 pixels); float inputs all in [0, 1]
    (torchvision's ToTensor; ``extremes()`` gives their minimum and maximum) are already in range;
    other inputs have none."""
    if dtype == np.bool_:
        return (0.0, 1.0)
    if np.issubdtype(dtype, np.unsignedinteger):
        return (0.0, float(np.iinfo(dtype).max))
    if np.issubdtype(dtype, np.floating):
        low, high = extremes()
        return (0.0, 1.0) if low >= 0 and high <= 1 else None
    return None


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

    def __init__(
        self,
        dataset: Dataset,
        *,
        test_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        test_fraction: float = 0.2,
        batch_size: int | None = None,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        min_train_batches: int = 0,
        scaling: ScalingName = "unit",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        super().__init__(**base_options(locals()))
        self.datasets = {"train": dataset, "test": test_dataset, "val": val_dataset}
        self.test_fraction = test_fraction
        self.items = self._read_items()  # the datasets in memory, by split: (rows, labels or None)

    @property
    def input_size(self) -> int:
        return self.items["train"][0].shape[1]

    def _read_items(self) -> dict[str, tuple[Tensor, Tensor | None]]:
        """Each dataset given as flattened float32 rows and int64 labels, checked; sets ``image_shape``,
        ``num_classes`` and ``value_range`` (the range of the training inputs' format)."""
        arrays = {
            split: _materialise(ds, f"the {split} dataset ({type(ds).__name__})", self.num_workers)
            for split, ds in self.datasets.items()
            if ds is not None
        }
        (x, y), names = arrays["train"], _classes(self.datasets["train"])
        for split, (inputs, labels) in arrays.items():
            if inputs.shape[1:] != x.shape[1:]:
                raise UsageError(
                    f"the {split} dataset's inputs have shape {inputs.shape[1:]}, the training "
                    f"dataset's {x.shape[1:]}; expected one shape: give both the same transform"
                )
            theirs = _classes(self.datasets[split])  # an ImageFolder numbers only the classes it holds
            renumber = names is not None and theirs not in (None, names) and labels is not None
            if renumber and 0 <= labels.min() and labels.max() < len(theirs):  # else the range check refuses them
                arrays[split] = (inputs, _renumbered(labels, theirs, names, split))
        shape, labelled = tuple(x.shape[1:]), y is not None
        self.image_shape = shape if len(shape) > 1 else None
        self.value_range = _value_range(x.dtype, lambda: (x.min(), x.max()))
        self.num_classes = None
        if labelled:
            span = 1 + max(int(a[1].max()) for a in arrays.values() if a[1] is not None)
            self.num_classes = _num_classes(self.datasets["train"], span)
        items = {}
        for split, (inputs, labels) in arrays.items():
            rows = torch.from_numpy(inputs.reshape(len(inputs), -1).astype(np.float32))
            _check_finite(rows, f"the {split} dataset", "fix the dataset or its transform")
            if labelled and (labels is None or labels.min() < 0 or labels.max() >= self.num_classes):
                raise UsageError(
                    f"the {split} dataset: expected labels in 0..{self.num_classes - 1}, got "
                    f"{'none' if labels is None else f'{labels.min()}..{labels.max()}'}; fix its labels"
                )
            items[split] = (rows, None if not labelled else torch.from_numpy(labels))
        return items

    def _read(self) -> RawData:
        (x, y), (test_x, test_y), (val_x, val_y) = (self.items.get(s, (None, None)) for s in ("train", "test", "val"))
        return RawData(x, y, test_x, test_y, val_x, val_y, value_range=self.value_range)


def _renumbered(labels: np.ndarray, theirs: list, names: list, split: str) -> np.ndarray:
    """Labels of a dataset whose ``classes`` (``theirs``) differ from the training dataset's
    (``names``), renumbered by class name."""
    unknown = [c for c in theirs if c not in names]
    if unknown:
        raise UsageError(
            f"the {split} dataset has class(es) {unknown} that the training dataset lacks (it has {names}); "
            "the model cannot predict them: remove them from it, or add training items of them"
        )
    return np.asarray([names.index(c) for c in theirs])[labels]


def _classes(dataset: Dataset) -> list | None:
    """The class names a dataset lists (torchvision's ``classes``), or a ``Subset``'s dataset's."""
    classes = getattr(dataset, "classes", None)
    if classes is None and isinstance(dataset, Subset):  # random_split of an ImageFolder
        return _classes(dataset.dataset)
    return None if classes is None else list(classes)


def _num_classes(dataset: Dataset, span: int) -> int:
    """A labelled dataset's number of classes: ``len(dataset.classes)`` where it lists them (as
    torchvision's do), else ``span``, the largest label seen + 1."""
    classes = _classes(dataset)
    return len(classes) if classes is not None else span

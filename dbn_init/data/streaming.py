"""Data that do not fit in memory: a torch ``IterableDataset`` (or any dataset) streamed, never held.

:class:`StreamingDataModule` reads its source once in ``__init__`` for what the model and the
scaling need (shape, labels, item counts, per-feature minimum, maximum, mean and variance: one
pass, merged batch by batch in float64), then streams it again every epoch: each item is
converted, assigned to its split, scaled by the fitted transform in its batch, and dropped.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..constraints import Interval, UsageError, validate_params
from ..scaling import Scaling
from .base import InMemoryDataModule, Scaled, ScalingName, _check_enough, _check_label_budget, class_budget
from .datasets import _check_alike, _item, _num_classes, _value_range

# Lightning warns of any IterableDataset with __len__ that workers may count twice; a _Stream's
# workers each read their own equal share, so its length is exact.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
_GOLDEN = (math.sqrt(5) - 1) / 2  # the Weyl sequence i * 0.618... mod 1 spreads items evenly over [0, 1)


def _merge(rows: list[np.ndarray], *scalers: StandardScaler | MinMaxScaler) -> None:
    """Fold the training rows collected into the per-feature statistics of ``scalers``, in float64; empty ``rows``."""
    batch = np.stack(rows).astype(np.float64)  # finite: every item is checked as the survey reads it
    for scaler in scalers:
        scaler.partial_fit(batch)
    rows.clear()


@dataclass
class _Survey:
    """What one pass over the training source found."""

    shape: tuple[int, ...]
    dtype: np.dtype
    moments: StandardScaler  # the "train" items' per-feature mean_ and var_, merged batch by batch in float64
    extremes: MinMaxScaler  # and their data_min_ and data_max_
    counts: dict[str, int]  # items per split: "train" (pretraining), "val", "test"
    class_counts: Counter = field(default_factory=Counter)  # labels of the "train" items
    labelled: bool = True
    label_span: int = 0  # the largest label in any split, + 1


class _Stream(IterableDataset):
    """One split of a source, as flattened float32 rows and int64 labels (-1: none), read anew on
    every pass. Under several processes or workers each reads every ``shards``-th item of the split
    and stops at an equal share, so that every DDP rank makes the same number of steps."""

    def __init__(self, split: str, module: StreamingDataModule, shuffle: bool) -> None:
        own = split in ("val", "test") and not module._carved(split)  # a split with a dataset of its own
        self.source, self.owner_split = module.datasets[split if own else "train"], None if own else module._split_of
        self.shuffle, self.wanted = shuffle, "train" if split == "pretrain" else split  # pretraining: training items
        self.label_budget = module.label_budget if split == "train" else None
        self.buffer, self.seed, self.epoch = module.shuffle_buffer, module.seed, 0
        self.rank, self.world = module._rank()
        self.workers = max(1, module.num_workers)
        self.total = module.num_labels if self.label_budget is not None else module.survey.counts[self.wanted]

    def __len__(self) -> int:
        """Items this process serves per pass (its workers' equal shares together)."""
        return self.total // (self.world * self.workers) * self.workers

    def _wanted(self) -> Iterator[tuple[np.ndarray, int]]:
        """The split's items in source order (after the label budget), as (input, label)."""
        kept: Counter = Counter()
        for i, raw in enumerate(self.source):
            if self.owner_split is not None and self.owner_split(i) != self.wanted:
                continue
            x, y = _item(raw)
            if self.label_budget is not None:
                if y is None or kept[y] >= self.label_budget.get(y, 0):
                    continue
                kept[y] += 1
            yield x, -1 if y is None else y

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        worker = get_worker_info()
        workers, wid = (1, 0) if worker is None else (worker.num_workers, worker.id)
        shards, shard = self.world * workers, self.rank * workers + wid
        share = self.total // shards
        rng = np.random.default_rng([self.seed % 2**63, self.epoch, shard])
        pool: list[tuple[Tensor, int]] = []
        for x, y in islice(self._wanted(), shard, shards * share, shards):  # every shards-th item, `share` of them
            pool.append((torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(-1)), y))
            if not self.shuffle or len(pool) >= self.buffer:  # a shuffle buffer: serve a random one
                yield pool.pop(int(rng.integers(len(pool))) if self.shuffle else 0)
        while pool:
            yield pool.pop(int(rng.integers(len(pool))) if self.shuffle else 0)


class _StreamLoader(DataLoader):
    """A DataLoader of a :class:`_Stream` whose length counts the batches its workers make: each
    batches its own share, so ``w`` workers make ``w * ceil(share / batch_size)`` batches, more than
    torch's ``ceil(len(stream) / batch_size)`` where a share is no multiple of the batch size (and
    Lightning, trusting the length, would skip the rest of the split)."""

    def __len__(self) -> int:
        stream, workers = self.dataset, max(1, self.num_workers)
        share = stream.total // (stream.world * workers)
        return workers * math.ceil(share / self.batch_size)


def _check_item_finite(x: np.ndarray, where: str) -> None:
    """Refuse an item with NaN/Inf values, naming it and the first bad feature (of the flattened item)."""
    bad = ~np.isfinite(np.asarray(x, dtype=np.float64)).reshape(-1)
    if bad.any():
        raise UsageError(
            f"expected finite values in {where}, got {int(bad.sum())} NaN/Inf (the first at feature "
            f"{int(np.argmax(bad))}); fix it or its transform"
        )


class StreamingDataModule(Scaled, LightningDataModule):
    """A dataset streamed from its source every epoch, for data that do not fit in memory.

    Any torch ``Dataset`` of ``(input, label)`` items or of inputs alone, typically an
    ``IterableDataset`` reading files or shards; inputs as :class:`DatasetDataModule` takes them
    (PIL, numpy, tensors; flattened, ``image_shape`` kept). The scaling (``unit``,
    ``standardize``, ``none``: :class:`InMemoryDataModule`'s laws) is fitted in one streaming pass
    over the training items, in ``__init__``; the same pass finds the sizes and counts.

    Splits without their own dataset are carved by position: item ``i`` goes to the test split
    when ``(i * 0.618...) mod 1 < test_fraction``, to validation when it is below
    ``test_fraction + val_fraction``, else to training. So they are disjoint, fixed and spread
    through the stream, whatever its order. ``num_labels`` keeps the first
    ``num_labels // num_classes`` training items of each class in stream order (the remainder to
    the first classes); pretraining sees every training item.

    Training items are shuffled within a buffer of ``shuffle_buffer`` items (seeded by ``seed``, the
    epoch and the shard). Under DDP, and with ``num_workers``, each process and worker reads every
    k-th item of a split and all stop at an equal share (at most k - 1 items of each split are left
    out per epoch), so every rank makes the same number of steps. The source must yield its items
    in the same order on every pass.
    """

    _parameter_constraints = {
        **InMemoryDataModule._parameter_constraints,
        "test_fraction": [Interval(float, 0, 1, "left")],
        "shuffle_buffer": [Interval(int, 1, None)],
        "seed": [Interval(int, 0, 2**63 - 1)],
    }
    _parameter_rules = InMemoryDataModule._parameter_rules
    _not_hyperparameters = ("dataset", "test_dataset", "val_dataset")

    def __init__(
        self,
        dataset: Dataset,
        *,
        test_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        batch_size: int = 100,
        num_labels: int | None = None,
        scaling: ScalingName = "unit",
        binarize: bool = False,
        shuffle_buffer: int = 10_000,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        validate_params(type(self).__name__, locals(), self._parameter_constraints, "data.", self._parameter_rules)
        carved = (test_fraction if test_dataset is None else 0) + (val_fraction if val_dataset is None else 0)
        if carved >= 1:
            raise UsageError(
                f"expected test_fraction + val_fraction < 1 (items must be left to train on), got {carved:g}; "
                "lower them, or give test_dataset / val_dataset"
            )
        self.save_hyperparameters(ignore=list(self._not_hyperparameters))
        self.datasets = {"train": dataset, "test": test_dataset, "val": val_dataset}
        self.test_fraction, self.val_fraction, self.batch_size = test_fraction, val_fraction, batch_size
        self.num_labels, self.scaling, self.binarize = num_labels, scaling, binarize
        self.shuffle_buffer, self.seed, self.num_workers = shuffle_buffer, seed, num_workers
        self.survey = self._survey()
        shape, self.labelled = self.survey.shape, self.survey.labelled
        self.input_size, self.image_shape = math.prod(shape), shape if len(shape) > 1 else None
        self.num_classes = _num_classes(dataset, self.survey.label_span) if self.labelled else None
        self._fit_scaling()
        self.label_budget = None  # items kept per class for fine-tuning under num_labels; None: every label
        if num_labels is not None:
            _check_label_budget(num_labels, self.num_classes, self.labelled)
            self.label_budget = dict(enumerate(class_budget(num_labels, self.num_classes)))
            for c, want in self.label_budget.items():
                _check_enough(want, self.survey.class_counts[c], num_labels, f"items of class {c}")

    # ------------------------------------------------------------ what the pass found
    def _carved(self, split: str) -> bool:
        return split in ("test", "val") and self.datasets[split] is None

    def _split_of(self, i: int) -> str:
        """Item ``i``'s split, by its place ``(i * 0.618...) mod 1`` in [0, 1): fixed by its index alone, it
        does not depend on the data, the seed or the number of processes reading it."""
        u, test = (i * _GOLDEN) % 1.0, self.test_fraction if self._carved("test") else 0.0
        if u < test:
            return "test"
        return "val" if self._carved("val") and u < test + self.val_fraction else "train"

    def _survey(self) -> _Survey:
        """One pass over the training source (and the counts of any own val/test datasets)."""
        counts, class_counts, first, rows = {"train": 0, "val": 0, "test": 0}, Counter(), None, []
        moments, extremes = StandardScaler(), MinMaxScaler()
        for i, raw in enumerate(self.datasets["train"]):
            x, y = _item(raw)
            first = first or (x.shape, x.dtype, y is not None)
            _check_alike("the training dataset", i, x, y, first)
            split = self._split_of(i)
            _check_item_finite(x, f"the training dataset's item {i} (of the {split} split)")
            counts[split] += 1
            if split == "train":
                rows.append(x.reshape(-1))
                if y is not None:
                    class_counts[y] += 1
                if len(rows) == 4096:
                    _merge(rows, moments, extremes)
        if counts["train"] == 0:
            name = type(self.datasets["train"]).__name__
            raise UsageError(
                f"the training dataset ({name}) left no items to train on; check it, or lower the fractions"
            )
        if rows:
            _merge(rows, moments, extremes)
        top = max(class_counts, default=-1)
        for split in ("val", "test"):  # counted, checked, and their labels seen (a class may be absent from training)
            for i, raw in enumerate(self.datasets[split] if self.datasets[split] is not None else ()):
                x, y = _item(raw)
                _check_item_finite(x, f"the {split} dataset's item {i}")
                counts[split] += 1
                top = max(top, y if first[2] else -1)
        return _Survey(first[0], first[1], moments, extremes, counts, class_counts, first[2], top + 1)

    def _fit_scaling(self) -> None:
        """:meth:`InMemoryDataModule.fit_scaling`'s rules, from the pass's moments instead of the rows."""
        low, high = self.survey.extremes.data_min_, self.survey.extremes.data_max_
        mean, std = self.survey.moments.mean_, np.sqrt(self.survey.moments.var_)

        def unit_moments(unit: Scaling) -> tuple[Tensor, Tensor]:  # of (raw - raw_low) / span, from the raw moments
            offset, span = unit.raw_low.double().numpy(), (unit.raw_high - unit.raw_low).double().numpy()
            return torch.from_numpy((mean - offset) / span).float(), torch.from_numpy(std / span).float()

        value_range = _value_range(self.survey.dtype, lambda: (low.min(), high.max()))
        extremes = lambda: (torch.from_numpy(low).float(), torch.from_numpy(high).float())
        self.transform = Scaling.fit(self.scaling, self.input_size, value_range, extremes, unit_moments, self.binarize)

    @staticmethod
    def _rank() -> tuple[int, int]:
        """(rank, world size) of the process group the loaders are built in: the fit's, or a
        pretraining stage's, whichever Trainer asks."""
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    # ------------------------------------------------------------ loaders
    def _scaled_batch(self, items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        """Collate: stack a batch's rows and scale them by the fitted transform, as one operation."""
        rows = torch.stack([x for x, _ in items])
        return self.scale(rows), torch.tensor([y for _, y in items], dtype=torch.int64)

    def _split_loader(self, split: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        stream = _Stream(split, self, shuffle)
        loader = _StreamLoader(
            stream,
            batch_size=batch_size or self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self._scaled_batch,
        )
        # Lightning calls the sampler's set_epoch(epoch) before every epoch; an iterable dataset's sampler has
        # none, so this one is given one: the epoch seeds the stream's shuffle buffer, so a resumed run
        # shuffles its epochs as the uninterrupted one did.
        loader.sampler.set_epoch = partial(setattr, stream, "epoch")
        return loader

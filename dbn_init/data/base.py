"""The in-memory base of every dbn_init DataModule: splits, scaling, label budgets and loaders."""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..constraints import Interval, Options, Rule, UsageError, validate_params
from ..scaling import SCALINGS, Scaling

ScalingName = Literal["unit", "standardize", "none"]  # for the signatures LightningCLI reads


def _check_finite(x: Tensor, where: str, fix: str) -> None:
    """One line naming how many values of ``x`` (N, D) are NaN/Inf and the first one's place."""
    count, first = 0, None
    for rows in chunks(len(x), x.shape[1]):  # a few MB at a time, not a copy of x
        bad = (~torch.isfinite(x[rows])).nonzero()
        count += len(bad)
        if first is None and count:
            first = (int(bad[0, 0]) + rows.start, int(bad[0, 1]))
    if count:
        raise UsageError(
            f"expected finite values in {where}, got {count} NaN/Inf (the first at row {first[0]}, "
            f"feature {first[1]}, counting from 0); {fix}"
        )


def carve(n: int, fraction: float, labels: np.ndarray | Tensor | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``0..n-1`` split into ``(kept, held_out)``, ``ceil(fraction * n)`` held out, with the
    constant ``seed``; stratified by ``labels`` when every class has two rows, else not."""
    rows = np.arange(n)
    if labels is not None:  # a class with one row, or fewer held-out rows than classes: cannot stratify
        with contextlib.suppress(ValueError):
            return tuple(train_test_split(rows, test_size=fraction, stratify=np.asarray(labels), random_state=seed))
    return tuple(train_test_split(rows, test_size=fraction, random_state=seed))


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
    and ``val_*`` likewise (``test_x`` None: the subclass's ``test_fraction`` of the training rows
    held out, stratified, with the constant seed 0; ``val_x`` None: carved from the training rows
    with ``split_seed``);
    ``unlabeled_x`` ``(M, D)``: extra rows for pretraining only. ``value_range``: the raw values
    the format maps to 0 and 1 (``(0, 255)`` for 8-bit pixels), None where the format has none.
    ``train_rows``, ``test_rows``: the positions in ``train_x``/``test_x`` of the split's rows
    (None: all of them), so that a split of one array needs no copy of it; ``train_y`` and
    ``test_y`` are the split's labels, one per position.
    """

    train_x: Tensor
    train_y: Tensor | None
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    val_x: Tensor | None = None
    val_y: Tensor | None = None
    unlabeled_x: Tensor | None = None
    value_range: tuple[float, float] | None = None
    train_rows: Tensor | None = None
    test_rows: Tensor | None = None


_CHUNK_VALUES = 1 << 22  # values per chunk (16 MB of float32) where rows are copied, scaled or checked


def return_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing):
    glibc keeps them, so the resident size of a process that read and scaled its rows would count
    those rows long after they were freed."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


def chunks(n: int, d: int) -> Iterator[slice]:
    """Slices of ``n`` rows of ``d`` values, about :data:`_CHUNK_VALUES` values each."""
    step = max(1, _CHUNK_VALUES // max(d, 1))
    return (slice(i, i + step) for i in range(0, n, step))


class Scaled:
    """The input transform a DataModule fits in ``setup`` (:class:`~dbn_init.scaling.Scaling`), with
    its statistics as attributes (None before ``setup``): what the in-memory and the streaming
    DataModules share of it."""

    transform: Scaling | None = None
    raw_low = property(lambda self: getattr(self.transform, "raw_low", None))
    raw_high = property(lambda self: getattr(self.transform, "raw_high", None))
    feature_mean = property(lambda self: getattr(self.transform, "feature_mean", None))
    feature_std = property(lambda self: getattr(self.transform, "feature_std", None))

    def scale(self, raw: Tensor | np.ndarray) -> Tensor:
        """Rows as stored ``(N, D)`` -> model inputs ``(N, D)`` float32, by the scaling fitted in ``setup``
        (e.g. to apply a trained model to new rows of the same source)."""
        return self.transform(raw)

    # The loaders: each module serves a split by name (_split_loader).
    def _split_loader(self, split: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        """Batches of ``split`` ("train", "pretrain", "val" or "test"); ``batch_size`` None: the module's."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        """Labelled training batches (a ``num_labels`` budget of them, if set), shuffled; unlabelled
        data serve every training row, labelled -1 (NaN for regression targets): an autoencoder's
        fine-tuning needs no labels, and a model that does refuses such data in its ``setup``."""
        return self._split_loader("train", shuffle=True)

    def pretrain_dataloader(self, steps_per_batch: int = 1) -> DataLoader:
        """Every pretraining row (labels, -1 where none, included but unused by RBMs), shuffled; each
        batch holds ``steps_per_batch`` consecutive mini-batches of ``batch_size`` rows."""
        return self._split_loader("pretrain", shuffle=True, batch_size=self.batch_size * steps_per_batch)

    def val_dataloader(self) -> DataLoader:
        return self._split_loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._split_loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split (``train.py predict`` returns its outputs per batch)."""
        return self.test_dataloader()


def batch_size_for(rows: int) -> int:
    """A batch size for ``rows`` rows: about 50 batches an epoch, of 16 to 100 rows (100 from 5,000 rows on)."""
    return min(100, max(16, math.ceil(rows / 50)))


class InMemoryDataModule(Scaled, LightningDataModule):
    """Base DataModule: splits, scaling and loaders of data held in memory; subclasses implement ``_read``.

    Args:
        batch_size: rows per batch. None (the default) suits the number of rows: about 50 batches an
            epoch, of 16 to 100 rows (:func:`batch_size_for`), chosen in ``setup`` for the pretraining
            rows (``batch_size``) and for the labelled ones (``train_batch_size``) apart, so that
            fine-tuning on few labels still takes several steps an epoch.
        val_fraction: share of the training rows held out for validation, in [0, 1).
        num_labels: keep only this many labelled training rows, class-balanced
            (``num_labels // num_classes`` per class, the remainder to the first classes);
            pretraining still sees every training row. None keeps all labels.
        min_train_batches: the full batches' worth of rows a fine-tuning epoch holds at least:
            labelled rows that make fewer are served ``ceil(min_train_batches * batch / rows)``
            times an epoch (the copies shuffled together), so that a small labelled set
            (a 10% budget of a few hundred rows: one batch) gets several steps an epoch. 0 (the
            default) serves each row once: 10 tied it on the development suite's validation
            splits, for every start (results/defaults_search/finetune_floor_probe.md).
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
    task: str = "classification"  # or "regression": float targets, NaN where a row has none
    image_shape: tuple[int, ...] | None = None  # (H, W) grey or (C, H, W) colour; None: not images
    _parameter_constraints: dict = {
        "batch_size": [None, Interval(int, 1, None)],
        "val_fraction": [Interval(float, 0, 1, "left")],
        "num_labels": [None, Interval(int, 1, None)],
        "min_train_batches": [Interval(int, 0, None)],
        "scaling": [Options(SCALINGS)],
        "binarize": [Options((False, True))],
        "split_seed": [Interval(int, None, None)],
        "num_workers": [Interval(int, 0, None)],
        "on_device": [Options((False, True))],
        "test_fraction": [Interval(float, 0, 1, "neither")],  # of subclasses whose source may lack a test split
    }
    _parameter_rules = (
        Rule(
            lambda p: not p["binarize"] or p["scaling"] == "unit",
            "expected binarize with scaling='unit', got binarize=true with scaling={scaling!r}: "
            "only values in [0, 1] are binarized; drop one of the two",
        ),
    )
    _not_hyperparameters: tuple[str, ...] = ()  # init arguments that are data, not settings (arrays, datasets)

    def __init__(
        self,
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
        super().__init__()
        self.save_hyperparameters(ignore=list(self._not_hyperparameters))  # a subclass's init arguments too
        validate_params(type(self).__name__, self.hparams, self._parameter_constraints, "data.", self._parameter_rules)
        if num_labels is not None and isinstance(type(self).num_classes, int):  # known before the data are read
            _check_label_budget(num_labels, self.num_classes)
        self.batch_size, self.val_fraction, self.num_labels = batch_size, val_fraction, num_labels
        self.min_train_batches = min_train_batches
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
        if raw.test_x is None:
            self._carve_test(raw)
        self.labelled = raw.train_y is not None
        if self.num_labels is not None:
            _check_label_budget(self.num_labels, self.num_classes, self.labelled)
        gen = torch.Generator().manual_seed(self.split_seed)
        rows = torch.arange(len(raw.train_x)) if raw.train_rows is None else raw.train_rows
        y = self._labels(raw.train_y, len(rows))
        if raw.val_x is None:
            perm = torch.randperm(len(rows), generator=gen)
            n_val = round(self.val_fraction * len(rows))
            if n_val >= len(rows):
                raise UsageError(
                    f"expected a non-empty training split, got val_fraction={self.val_fraction} of "
                    f"{len(rows)} rows; lower val_fraction"
                )
            # Indices into the training rows read, kept so callers can check the splits are disjoint.
            self.val_indices, self.pretrain_indices = perm[:n_val].sort().values, perm[n_val:].sort().values
            val, self.val_y = (raw.train_x, rows[self.val_indices]), y[self.val_indices]
            pretrain, y = [(raw.train_x, rows[self.pretrain_indices])], y[self.pretrain_indices]
        else:
            self.val_indices, self.pretrain_indices = torch.arange(0), torch.arange(len(rows))
            val, self.val_y = (raw.val_x, None), self._labels(raw.val_y, len(raw.val_x))
            pretrain = [(raw.train_x, raw.train_rows)]
        n_labelled, self.pretrain_y = len(y), y
        if raw.unlabeled_x is not None:  # after the labelled rows: train_x stays a view of pretrain_x
            pretrain.append((raw.unlabeled_x, None))
            self.pretrain_y = torch.cat([y, self._labels(None, len(raw.unlabeled_x))])
        test = (raw.test_x, raw.test_rows)
        self.pretrain_x, self.val_x, self.test_x = self._scaled_splits([pretrain, [val], [test]], raw.value_range)
        self.test_y = self._labels(raw.test_y, len(self.test_x))
        self._label_subset(n_labelled, gen)
        chosen = self.batch_size  # the argument, or a value set on the module before setup
        self.batch_size = chosen or batch_size_for(len(self.pretrain_x))
        self.train_batch_size = chosen or batch_size_for(len(self.train_x))
        self._warn_untrained_classes()
        self._ready = True

    def _carve_test(self, raw: RawData) -> None:
        """Hold out ``test_fraction`` of ``raw``'s training rows as its test rows (positions into ``train_x``),
        stratified by class, with the constant seed 0 (not ``split_seed``), so test scores compare across seeds."""
        strata = raw.train_y if self.task == "classification" else None
        keep, held = (torch.as_tensor(i) for i in carve(len(raw.train_x), self.test_fraction, strata))
        # Source rows of test_x, and of the training rows that val_indices and pretrain_indices index.
        self.test_indices, self.source_indices = held, keep
        raw.test_x, raw.train_rows, raw.test_rows = raw.train_x, keep, held
        if raw.train_y is not None:
            raw.train_y, raw.test_y = raw.train_y[keep], raw.train_y[held]

    def _scaled_splits(
        self, splits: list[list[tuple[Tensor, Tensor | None]]], value_range: tuple[float, float] | None
    ) -> list[Tensor]:
        """Each split, a list of (rows, positions or None for all), as views of one float32 tensor:
        the rows are copied into it a chunk at a time, the scaling is fitted on the first split
        (the pretraining rows) and applied in place, so the module holds one copy of its data."""
        d = splits[0][0][0].shape[1]
        sizes = [sum(len(rows if at is None else at) for rows, at in split) for split in splits]
        data, start = torch.empty(sum(sizes), d, dtype=torch.float32), 0
        for split in splits:
            for rows, at in split:
                n = len(rows if at is None else at)
                for part in chunks(n, d):
                    data[start + part.start : start + min(part.stop, n)] = rows[part] if at is None else rows[at[part]]
                start += n
        views = list(data.split(sizes))
        self.fit_scaling(views[0], value_range)
        for part in chunks(len(data), d):
            data[part] = self.scale(data[part])
        return views

    def _warn_untrained_classes(self) -> None:
        """A class with no labelled training row (its only rows went to validation or test) is one the
        model never trains on; the splits stay as they are, so say so."""
        if not self.labelled or not self.num_classes:
            return
        missing = sorted(set(range(self.num_classes)) - set(self.train_y[self.train_y >= 0].tolist()))
        if missing:
            names = getattr(self, "classes", None)  # the labels as given, where the module keeps them
            rows = int((self.train_y >= 0).sum())  # labelled
            quantities = "targets" in self.hparams and self.num_classes > max(20, rows // 10)  # e.g. integer counts
            warnings.warn(
                f"{type(self).__name__}: class(es) {[names[c] for c in missing] if names else missing} have no "
                "labelled row in the training split (theirs went to validation or test, or the test rows "
                "alone have them), so the model never trains on them; add training rows of those classes, "
                "or lower val_fraction"
                + (
                    f"; or, if the labels are quantities rather than classes ({self.num_classes} classes in "
                    f"{rows} rows), fit a regression: data.targets values"
                    if quantities
                    else ""
                ),
                stacklevel=2,
            )

    def _labels(self, y: Tensor | None, n: int) -> Tensor:
        """``y``, or ``n`` "no label" marks: -1 for classes, NaN for regression targets."""
        if y is not None:
            return y
        return torch.full((n,), -1, dtype=torch.int64) if self.task == "classification" else torch.full((n,), math.nan)

    def _label_subset(self, n_labelled: int, gen: torch.Generator) -> None:
        """``train_*``: the first ``n_labelled`` pretraining rows, or a class-balanced sample of
        ``num_labels`` of them (of any ``num_labels`` rows, for regression targets)."""
        if self.num_labels is None:  # views, not copies: no second 188 MB copy for MNIST
            whole = n_labelled == len(self.pretrain_x)
            self.train_x = self.pretrain_x if whole else self.pretrain_x[:n_labelled]
            self.train_y, self.train_indices = self.pretrain_y[:n_labelled], self.pretrain_indices
            return
        labels, regression = self.pretrain_y[:n_labelled], self.task == "regression"  # regression: one pool, every row
        picked = []
        for c, want in enumerate([self.num_labels] if regression else class_budget(self.num_labels, self.num_classes)):
            pool = torch.arange(len(labels)) if regression else (labels == c).nonzero().squeeze(1)
            _check_enough(want, len(pool), self.num_labels, "rows" if regression else f"rows of class {c}")
            picked.append(pool[torch.randperm(len(pool), generator=gen)[:want]])
        subset = torch.cat(picked).sort().values
        self.train_indices = self.pretrain_indices[subset]
        self.train_x, self.train_y = self.pretrain_x[subset], self.pretrain_y[subset]

    def fit_scaling(self, raw: Tensor, value_range: tuple[float, float] | None = None) -> None:
        """Fit :attr:`transform` to the rows ``raw`` ``(N, D)``, for ``self.scaling`` (see the class docstring)."""

        def unit_moments(unit: Scaling) -> tuple[Tensor, Tensor]:
            x = unit.unit(raw)
            return x.mean(0), x.std(0, unbiased=False)

        extremes = (lambda: (raw.min(0).values, raw.max(0).values)) if len(raw) else None
        self.transform = Scaling.fit(self.scaling, raw.shape[1], value_range, extremes, unit_moments, self.binarize)

    # ---------------------------------------------------------------- loaders

    def _device(self) -> torch.device | None:
        """The accelerator the attached Trainer runs on, if the splits should live there."""
        if not self.on_device or self.num_workers > 0 or self.trainer is None:
            return None
        device = self.trainer.strategy.root_device
        return None if device.type == "cpu" else device

    def _resident(self, t: Tensor, device: torch.device) -> Tensor:
        """``t`` on ``device``, copied once per fit-independent split (loaders are rebuilt per fit)."""
        key = (id(t), str(device))
        if key not in self._device_copies:
            self._device_copies[key] = t.to(device)
        return self._device_copies[key]

    def _loader(
        self, x: Tensor, y: Tensor, shuffle: bool, batch_size: int | None = None, passes: int = 1
    ) -> DataLoader:
        # A plain DataLoader (not a custom batch sampler) so Lightning can inject its DistributedSampler.
        # The shuffle seed is the run's seed (seed_everything), read when the loader is built.
        device = self._device()
        if device is not None:
            x, y = self._resident(x, device), self._resident(y, device)
        if passes > 1:  # the rows served that many times an epoch (min_train_batches)
            x, y = x.repeat(passes, 1), y.repeat(passes)
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

    def _split_loader(self, split: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
        if split != "train":
            return self._loader(x, y, shuffle, batch_size)
        batch_size = batch_size or self.train_batch_size
        passes = max(1, math.ceil(self.min_train_batches * batch_size / len(x)))  # 1 for 0 (setup refuses empty splits)
        return self._loader(x, y, shuffle, batch_size, passes)


# The options every in-memory DataModule takes, read off the base's signature (a subclass lists them
# in its own, for LightningCLI, and hands them on with base_options).
BASE_OPTIONS = tuple(inspect.signature(InMemoryDataModule.__init__).parameters)[1:]


def base_options(args: dict) -> dict:
    """The base's options out of a subclass's ``locals()``."""
    return {name: args[name] for name in BASE_OPTIONS}


def class_budget(num_labels: int, num_classes: int) -> list[int]:
    """Labels kept per class under a budget of ``num_labels``: an equal share, the remainder to
    the first classes."""
    per_class, extra = divmod(num_labels, num_classes)
    return [per_class + (c < extra) for c in range(num_classes)]


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


def _check_enough(want: int, got: int, num_labels: int, rows: str) -> None:
    """Refuse a ``num_labels`` budget that needs ``want`` training ``rows`` ("rows of class 3") where ``got`` exist."""
    if got < want:
        raise UsageError(
            f"expected at least {want} training {rows} for num_labels={num_labels}, got {got}; "
            "lower num_labels or val_fraction"
        )

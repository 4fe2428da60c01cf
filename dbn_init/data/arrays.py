"""Your own rows of features: in-memory arrays, an array file, or a loader function."""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..constraints import Options, UsageError
from .base import InMemoryDataModule, RawData, ScalingName, _check_finite, base_options, return_freed_memory
from .readers import _by_name, _label_array, _target_values, encode_labels, read_array_file, table_columns


@dataclass
class _Arrays:
    """An :class:`ArrayDataModule`'s rows as read: features ``(N, D)`` float32, label codes int64.
    ``setup`` moves the rows into the splits: the features are None after it."""

    x: Tensor | None
    y: Tensor | None
    test_x: Tensor | None
    test_y: Tensor | None
    unlabeled_x: Tensor | None
    predict_x: Tensor | None
    classes: list | None
    n_features: int


def _features(values: Any, where: str, n_features: int | None = None) -> tuple[Tensor, tuple[int, ...]]:
    """Rows of numbers ``(N, D)`` float32, checked; arrays ``(N, C, H, W)``/``(N, H, W)`` are flattened
    (returned shape: one row's shape, ``(D,)`` for a table)."""
    try:
        x = torch.as_tensor(
            values.detach().cpu() if isinstance(values, Tensor) else np.asarray(values, dtype=np.float32),
            dtype=torch.float32,
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
            f"data and target, e.g. 'sklearn.datasets.load_wine'; importing it failed "
            f"({str(err) or f'{module} has no {attr!r}'})"
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
    pretraining and an autoencoder's fine-tuning; a classifier or regressor refuses it with the fix.

    Args:
        test_path, x_test, y_test: the test rows (a file like ``path``, or arrays); without them
            ``test_fraction`` of the rows is held out, stratified, with the constant seed 0
            (not ``split_seed``), so test scores compare across seeds. Tables (files with a
            header, DataFrames beside a DataFrame ``x``) are matched to the training columns by name.
        unlabeled_path, x_unlabeled: extra rows for pretraining only (a ``target`` column in the
            file is ignored).
        predict_path: rows for ``predict_dataloader`` (else it serves the test split).
        image_shape: ``(H, W)`` or ``(C, H, W)`` of one row when the features are flattened
            images, so pictures show them as such.
        targets: ``"classes"`` (class labels) or ``"values"``: ``y`` (the ``target`` column)
            holds one number per row, kept as float32 (no class codes, no stratified test split,
            ``num_labels`` keeps any rows). The module's ``task`` is then ``"regression"``
            (else ``"classification"``), which a model with ``task=None`` follows.
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

    _not_hyperparameters = ("x", "y", "x_test", "y_test", "x_unlabeled")  # the sources given as arrays
    _NAMED_SOURCES = ("path", "target", "loader", "test_path", "unlabeled_path", "predict_path")  # files, a function
    _parameter_constraints = {
        **InMemoryDataModule._parameter_constraints,
        "targets": [Options(("classes", "values"))],
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
        targets: Literal["classes", "values"] = "classes",
        test_fraction: float = 0.2,
        batch_size: int | None = None,
        val_fraction: float = 0.1,
        num_labels: int | None = None,
        min_train_batches: int = 0,
        scaling: ScalingName = "standardize",
        binarize: bool = False,
        split_seed: int = 0,
        num_workers: int = 0,
        on_device: bool = True,
    ) -> None:
        args = locals()
        sources = {name: args[name] for name in self._not_hyperparameters + self._NAMED_SOURCES}
        self._check_sources({k: v is not None for k, v in sources.items()})
        super().__init__(**base_options(args))
        self._sources, self.test_fraction = sources, test_fraction
        self.task = "regression" if targets == "values" else "classification"
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.arrays = self._read_arrays()  # the rows as read; sets classes, num_classes, image_shape

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
        return self.arrays.n_features

    def _source(
        self, option: str, array_option: str | None = None, labels_option: str | None = None
    ) -> tuple[Any, Any, str] | None:
        """``(x, y, where)`` of one source, as given or as read from its file; None if not given.
        Only ``path`` must hold the ``target`` column; in the other files it may be absent. A table
        beside a table ``path`` is read by ``path``'s column names, in its order."""
        src = self._sources
        if array_option is not None and src[array_option] is not None:
            x, columns = src[array_option], getattr(src["x"], "columns", None)
            if array_option != "x" and columns is not None and hasattr(x, "columns"):  # frames: matched by name
                names, wanted = [str(c) for c in x.columns], [str(c) for c in columns]
                x = x.iloc[:, _by_name(names, list(range(len(names))), wanted, array_option, "frame")]
            return x, None if labels_option is None else src[labels_option], array_option
        if src[option] is None:
            return None
        names = None if option == "path" or src["path"] is None else table_columns(src["path"], src["target"])
        if names is not None and table_columns(src[option], option=option) is None:
            names = None  # a file without names (.npz, .npy) is matched by width
        x, y = read_array_file(src[option], src["target"], option, target_optional=option != "path", columns=names)
        return x, y, f"{option} {src[option]}"

    def _read_arrays(self) -> _Arrays:
        src, names = self._sources, None
        if src["loader"] is not None:
            x, y, names = _call_loader(src["loader"])
            where = f"loader {src['loader']}"
        else:
            x, y, where = self._source("path", "x", "y")
        x, shape = _features(x, where)
        y = None if y is None else self._targets(y, where, len(x))
        test_x, test_y = self._side_rows(("test_path", "x_test", "y_test"), x.shape[1], labelled=y is not None)
        unlabeled_x, _ = self._side_rows(("unlabeled_path", "x_unlabeled"), x.shape[1], labelled=False)
        predict_x, _ = self._side_rows(("predict_path",), x.shape[1], labelled=False)
        classes = None  # regression targets, or no labels
        if self.task == "classification" and y is not None:  # test_y is None where y is
            (y, test_y), codes = encode_labels(y, test_y)
            if len(codes) < 2:
                raise UsageError(
                    f"{where}: expected labels of at least two classes, got one ({codes[0]!r}); a classifier "
                    "needs two: check the target column, or leave target out for unlabelled rows"
                )
            classes = names if names is not None and codes == list(range(len(names))) else codes
        elif y is not None and len(y) and (y == y[0]).all():  # regression targets
            raise UsageError(
                f"the targets of {where}: expected values that vary, got {float(y[0]):g} in every row: a regressor "
                "has nothing to learn; check the target column"
            )
        dtype = torch.int64 if self.task == "classification" else torch.float32
        y, test_y = (None if v is None else torch.as_tensor(v, dtype=dtype) for v in (y, test_y))
        # The original label of each class code 0..C-1 (ints or strings); None for unlabelled data.
        self.classes, self.num_classes = classes, None if classes is None else len(classes)
        self.image_shape = self._check_image_shape(shape, x.shape[1])
        return _Arrays(x, y, test_x, test_y, unlabeled_x, predict_x, classes, x.shape[1])

    def _targets(self, y: Any, where: str, rows: int) -> np.ndarray:
        """Class labels (int64 or str) or, for regression, float32 targets, ``(rows,)``, checked; a
        column ``(rows, 1)`` (a one-column frame) is read as ``(rows,)``."""
        y = np.asarray(y)
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        y = (_target_values if self.task == "regression" else _label_array)(y, f"the labels of {where}")
        if len(y) != rows:
            raise UsageError(f"{where}: expected one label per row, got {len(y)} labels for {rows} rows")
        return y

    def _side_rows(self, options: tuple, n_features: int, labelled: bool) -> tuple[Tensor | None, np.ndarray | None]:
        """Test, unlabelled or predict rows (:meth:`_source` of ``options``): features like the training rows',
        labels if ``labelled``."""
        source = self._source(*options)
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
        return x, self._targets(y, where, len(x))

    def _check_image_shape(self, shape: tuple[int, ...], n_features: int) -> tuple[int, ...] | None:
        image_shape = self.image_shape or (shape if len(shape) > 1 else None)
        if image_shape is not None and len(image_shape) == 3 and image_shape[0] == 1:
            image_shape = image_shape[1:]  # one channel: grey (H, W)
        if image_shape is not None and math.prod(image_shape) != n_features:
            raise UsageError(
                f"expected image_shape whose product is the {n_features} features per row, got "
                f"{image_shape} ({math.prod(image_shape)}); fix data.image_shape or leave it out"
            )
        return image_shape

    def _read(self) -> RawData:
        a = self.arrays
        return RawData(a.x, a.y, a.test_x, a.test_y, unlabeled_x=a.unlabeled_x)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        super().setup(stage)
        self.predict_x = None if self.arrays.predict_x is None else self.scale(self.arrays.predict_x)
        # The splits hold the rows now, scaled: the rows as read go, so one copy of the data stays.
        self.arrays.x = self.arrays.test_x = self.arrays.unlabeled_x = self.arrays.predict_x = None
        return_freed_memory()

    def predict_dataloader(self) -> DataLoader:
        """The ``predict_path`` rows (labels -1), else the test split."""
        if self.predict_x is None:
            return self.test_dataloader()
        return self._loader(self.predict_x, self._labels(None, len(self.predict_x)), shuffle=False)

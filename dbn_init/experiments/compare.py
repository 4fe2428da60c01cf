"""The comparison runner: every (initialisation x architecture x seed x label budget) cell.

    python -m dbn_init.experiments.compare --config configs/compare_digits.yaml [--data.root DIR] [--out DIR]

Each cell runs the same pipeline as ``train.py``: a DataModule, a :class:`~dbn_init.models.DBN`
(pretraining stages, transfer) or a :class:`~dbn_init.models.Baseline`, one fine-tuning fit of
``max_epochs`` epochs (or fewer: ``--patience`` stops a cell after that many validation checks
without a better ``val_acc``, ``val_r2`` for regression, ``val_sse`` for reconstruction), then a
test of the final weights, or of the best validation epoch's with ``--select best``; ``--test
false`` reports validation only, for a recipe search.
``--dbn`` and ``--baseline`` are those classes' own arguments (checked by their signatures, so a
typo is an error); each ``--extra`` row may add options of its own. Writes to ``--out``:

- ``results.json`` (:mod:`dbn_init.experiments.results`): every finished cell with its settings, saved after
  every cell, so a rerun with the same ``--out`` resumes, and refuses a cell finished with other
  settings (:mod:`dbn_init.runs` says what counts);
- ``results.md``: mean ± std test accuracy over seeds per cell, best per column in bold, times;
- ``curves.png``: validation accuracy per epoch per model (mean over seeds), a panel per
  architecture; ``filters.png``: first-layer RBM filters of the first DBN cell;
- ``pretrained/``: each DBN cell's stack, shared by its label budgets (pretraining sees no labels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace
from jsonargparse.typing import NonNegativeInt, PositiveInt, restricted_number_type
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_only

from .. import entry
from ..callbacks import BestEpoch
from ..cli import as_flags
from ..configs import shipped
from ..constraints import FileTakenError, UsageError
from ..entry import OneLineParser
from ..init import INIT_SCHEMES
from ..io import data_record, load_stack, replacing, save_stack
from ..models import DBN, Baseline, Classifier
from ..plots import image_grid, save_image_grid
from ..pretrain import import_stack, make_trainer, pretrain
from ..runs import differences, pretraining_settings, run_settings
from .report import plot_curves, summarize
from .results import ResultsFile

__all__ = ["Cell", "Row", "main", "build_parser", "run", "cells"]

MODELS = ("dbn", *INIT_SCHEMES)
ModelName = Literal[MODELS]  # type: ignore[valid-type]
Seed = restricted_number_type("Seed", int, [(">=", 0), ("<=", 2**32 - 1)])  # what seed_everything accepts
_SET_BY_CELL = {"input_size", "num_classes", "hidden"}  # from the data and the row
_OUTPUTS = ("results.md", "curves.png", "filters.png", "pretrained")  # what a run writes besides results.json


@dataclass
class Row:
    """An extra row of the table: its own name and shape, and options over ``--dbn``/``--baseline``."""

    name: str
    model: ModelName
    hidden: list[PositiveInt]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One run of the table: a row at one shape, seed and label budget."""

    name: str  # the row label, e.g. "dbn", "dbn_large", "xavier_uniform"
    model: str  # "dbn" or an init scheme
    hidden: tuple[int, ...]
    seed: int
    labels: Optional[int]
    options: tuple = ()  # the row's own options, as sorted (key, value) pairs

    def key(self) -> tuple:
        return (self.name, self.hidden, self.seed, self.labels)


def build_parser() -> ArgumentParser:
    # no abbreviations: --dbn.cd must be refused, not taken for --dbn.cd_k
    parser = OneLineParser(prog="python -m dbn_init.experiments.compare", description=__doc__.split("\n\n")[0],
                           default_env=False, allow_abbrev=False)  # fmt: skip
    parser.add_argument("--config", action=ActionConfigFile, help="a configs/compare_*.yaml file")
    parser.add_subclass_arguments(LightningDataModule, "data", required=True, help="the DataModule, as in train.py")
    parser.add_argument("--models", type=list[ModelName], default=list(MODELS), help="rows of the table")
    parser.add_argument("--hidden", type=list[list[PositiveInt]], default=[[256, 256]], help="architectures")
    parser.add_argument(
        "--extra",
        type=list[Row],
        default=[],
        help="rows with a shape and options of their own: [{name: dbn_large, model: dbn, "
        "hidden: [500, 500, 2000], options: {pretrain_epochs: 20}}]",
    )
    parser.add_argument("--seeds", type=list[Seed], default=[0, 1, 2], help="each seeds its cell (0 to 2**32 - 1)")
    parser.add_argument(
        "--labels",
        type=list[Optional[PositiveInt]],
        default=[None],
        help="label budgets for fine-tuning (null = all); pretraining always sees every image",
    )
    parser.add_argument("--max_epochs", type=PositiveInt, default=15, help="fine-tuning epochs of every cell")
    parser.add_argument(
        "--min_steps",
        type=NonNegativeInt,
        default=0,
        help="at least this many fine-tuning steps (more epochs on small label budgets)",
    )
    parser.add_argument(
        "--patience",
        type=Optional[PositiveInt],
        default=None,
        help="stop a cell's fine-tuning after this many validation checks without a better val_acc "
        "(val_r2 for regression, val_sse for reconstruction; null: never)",
    )
    parser.add_argument(
        "--select",
        type=Literal["last", "best"],
        default="last",
        help="which epoch's weights are tested: the last, or the best validation epoch's",
    )
    parser.add_argument(
        "--test", type=bool, default=True, help="score the test split; false: validation only (a recipe search)"
    )
    # The cell sets the sizes, a scheme row its init, and a DBN cell's seed seeds its pretraining.
    parser.add_class_arguments(DBN, "dbn", skip=_SET_BY_CELL | {"pretrain_seed"}, instantiate=False)
    parser.add_class_arguments(Baseline, "baseline", skip=_SET_BY_CELL | {"init"}, instantiate=False)
    parser.add_argument("--accelerator", type=str, default="auto")
    parser.add_argument("--devices", type=PositiveInt, default=1)
    parser.add_argument("--out", type=str, default="results/compare", help="output folder; a rerun resumes it")
    return parser


def cells(cfg: Namespace) -> list[Cell]:
    rows = [(m, m, tuple(h), ()) for h in cfg.hidden for m in cfg.models]
    rows += [(e.name, e.model, tuple(e.hidden), tuple(sorted(e.options.items()))) for e in cfg.extra]
    return [
        Cell(name, model, hidden, seed, labels, options)
        for labels in cfg.labels
        for name, model, hidden, options in rows
        for seed in cfg.seeds
    ]


# --- building a cell's objects --------------------------------------------------------------
def _datamodule(cfg: Namespace, labels: Optional[int]) -> LightningDataModule:
    """The ``--data`` module with the cell's label budget, built as jsonargparse builds it, so class
    paths nested in its arguments (a torch Dataset of DatasetDataModule) become objects too."""
    config = cfg.data.clone()
    if labels is not None:
        config.init_args.num_labels = labels
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(parser.parse_object({"data": config.as_dict()})).data


def _row_options(row: Row, cfg: Namespace) -> None:
    """Check an extra row's options as ``--dbn``/``--baseline`` are checked: by the class's signature."""
    cls, group, skip = (DBN, "dbn", {"pretrain_seed"}) if row.model == "dbn" else (Baseline, "baseline", {"init"})
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, skip=_SET_BY_CELL | skip, instantiate=False)
    try:
        parser.parse_object({**vars(getattr(cfg, group)), **row.options})
    except ArgumentError as err:
        raise UsageError(f"--extra row {row.name!r} (a {cls.__name__}): {' '.join(str(err).split())}") from err


def _flags(err: BaseException, group: str) -> str:
    """A library refusal in this command's words: ``model.X`` is ``--dbn.X`` or ``--baseline.X`` here."""
    # the runner's shapes are its own option, --hidden
    flags = {"model.hidden": "--hidden", "model": f"--{group}.", "data": "--data.", "ckpt_path": "--ckpt_path"}
    return as_flags(str(err), flags)


def _model(cell: Cell, cfg: Namespace, data: LightningDataModule) -> Classifier:
    """The cell's untrained model: a DBN with ``--dbn`` or a Baseline with ``--baseline``, then the row's options."""
    sizes = dict(input_size=data.input_size, num_classes=data.num_classes, hidden=list(cell.hidden))
    if cell.model == "dbn":
        return DBN(**sizes, **{**vars(cfg.dbn), "pretrain_seed": cell.seed, **dict(cell.options)})
    return Baseline(**sizes, init=cell.model, **{**vars(cfg.baseline), **dict(cell.options)})


def _epochs(cfg: Namespace, data: LightningDataModule) -> int:
    """Fine-tuning epochs: ``max_epochs``, or more where ``min_steps`` needs them (small label budgets)."""
    batches = len(data.train_dataloader())
    return max(cfg.max_epochs, math.ceil(cfg.min_steps / batches))


# How a cell's fine-tuning ends and which weights it scores, with the value a row without the key means.
_FIT_SETTINGS = {"epochs": None, "patience": None, "select": "last"}


def cell_settings(model: Classifier, data: LightningDataModule, epochs: int, cfg: Namespace) -> dict[str, Any]:
    """Everything besides the cell's key that decides its result (:func:`dbn_init.runs.run_settings`,
    defaults included, the fine-tuning epochs, patience and selected epoch): a finished row
    counts only when these match."""
    return {**run_settings(model, data), "epochs": epochs, "patience": cfg.patience, "select": cfg.select}


def _stack_cache(out: Path, cell: Cell, model: Classifier, data: LightningDataModule) -> Path:
    """Where a DBN cell's pretrained stack is cached: keyed by what pretraining depends on, so the
    label budgets and fine-tuning options of one shape and seed share it (across rows too: a row
    that differs only in fine-tuning reuses another's stack), and changes miss it."""
    key = json.dumps(pretraining_settings(model, data), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return out / "pretrained" / f"dbn-{'-'.join(map(str, cell.hidden))}-seed{cell.seed}-{digest}.safetensors"


# What a cell of each task is stopped, selected and scored by, whether higher is better, and its test scores.
_METRICS = {
    "classification": ("acc", "max", ("test_acc",)),
    "regression": ("r2", "max", ("test_r2", "test_rmse")),
    "reconstruction": ("sse", "min", ("test_sse",)),
}


def _metric(model: Classifier, data: LightningDataModule) -> tuple[str, str, tuple[str, ...]]:
    """The cell's task's metric (:data:`_METRICS`): the model's task, else the data's."""
    return _METRICS[model.task or getattr(data, "task", None) or "classification"]


class _ValCurve(Callback):
    """Collects the validation metric ``key`` after every fine-tuning epoch (not the sanity check)."""

    def __init__(self, key: str) -> None:
        self.key, self.values = key, []

    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        # on_validation_end, not _epoch_end: the module logs its metrics in its own epoch-end hook,
        # which Lightning calls after the callbacks' one.
        if not trainer.sanity_checking and self.key in trainer.callback_metrics:
            self.values.append(round(float(trainer.callback_metrics[self.key]), 6))


# --- running ---------------------------------------------------------------------------------
def _pretrain_cell(cell: Cell, cfg: Namespace, model: DBN, data: LightningDataModule, out: Path) -> tuple[float, bool]:
    """Pretrain a DBN cell, or load its cached stack; (seconds, whether it came from the cache)."""
    cache = _stack_cache(out, cell, model, data)
    cached = cache.exists()
    if cached:
        try:
            model.load_rbms(load_stack(cache, input_size=data.input_size, hidden=list(cell.hidden)).rbms)
        except ValueError as err:
            raise UsageError(
                f"{err}; it is this runner's cached pretrained stack: delete {cache} to pretrain it again"
            ) from err
    options = dict(accelerator=cfg.accelerator, devices=cfg.devices)
    start = time.perf_counter()
    pretrain(model, data, lambda stage, epochs: make_trainer(epochs, options, num_sanity_val_steps=0))
    seconds = time.perf_counter() - start
    if not cached and _lead():
        cache.parent.mkdir(exist_ok=True)
        save_stack(model.rbms, cache, **data_record(data))
    filters = out / "filters.png"
    if not filters.exists() and getattr(data, "image_shape", None) and _lead():
        grid = image_grid(model.rbms[0].weight[:100], data.image_shape)
        save_image_grid(grid, filters, f"RBM 1 filters ({cell.name}, hidden={list(cell.hidden)}, seed {cell.seed})")
    return seconds, cached


def run_cell(cell: Cell, cfg: Namespace, data: LightningDataModule, out: Path) -> dict[str, Any]:
    """Run one cell end to end and return its results row."""
    seed_everything(cell.seed, verbose=False)
    model = _model(cell, cfg, data)
    epochs = _epochs(cfg, data)
    settings = cell_settings(model, data, epochs, cfg)
    pretrain_seconds, cached = _pretrain_cell(cell, cfg, model, data, out) if cell.model == "dbn" else (0.0, False)
    metric, mode, scores = _metric(model, data)
    curve, best = _ValCurve(f"val_{metric}"), BestEpoch(f"val_{metric}", mode)
    stop = [EarlyStopping(f"val_{metric}", mode=mode, patience=cfg.patience)] if cfg.patience else []
    every = max(1, epochs // cfg.max_epochs)
    trainer = make_trainer(
        epochs,
        dict(accelerator=cfg.accelerator, devices=cfg.devices),
        callbacks=[curve, *stop, *([best] if cfg.select == "best" else [])],
        num_sanity_val_steps=0,
        check_val_every_n_epoch=every,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - start
    test = trainer.test(model, datamodule=data, verbose=False)[0] if cfg.test else {}
    # The scored weights: the best validation check's, or the last's (its epoch counts from 1).
    selected = len(curve.values) * every if best.best_epoch is None else best.best_epoch
    val_score = round(best.best_score, 6) if best.best_score is not None else (curve.values or [None])[-1]
    return {
        "model": cell.name,
        "hidden": list(cell.hidden),
        "seed": cell.seed,
        "labels": cell.labels,
        **{key: round(float(test[key]), 6) if test else None for key in scores},
        "test_loss": round(float(test["test_loss"]), 6) if test else None,
        f"val_{metric}": val_score,
        "val_curve": curve.values,
        "epochs": epochs,
        "epochs_run": trainer.current_epoch,
        "selected_epoch": selected if curve.values else None,
        "fit_seconds": round(fit_seconds, 2),
        "pretrain_seconds": round(pretrain_seconds, 2),
        "pretrained_from_cache": cached,
        "dataset": getattr(data, "dataset_name", type(data).__name__),
        "train_size": len(data.train_dataloader().dataset),
        "settings": settings,
    }


def _check_row_names(extra: list[Row]) -> None:
    """One name is one recipe: it may come at several shapes, never twice at one or with other
    options; a DBN row's name starts with ``dbn``, and only a DBN row's."""
    recipes: dict[str, str] = {}
    shapes: set[tuple] = set()
    clashing = []
    for e in extra:
        recipe = json.dumps([e.model, e.options], sort_keys=True, default=str)
        if e.name in MODELS or recipes.setdefault(e.name, recipe) != recipe or (e.name, tuple(e.hidden)) in shapes:
            clashing.append(e.name)
        shapes.add((e.name, tuple(e.hidden)))
    if clashing:
        raise UsageError(
            f"extra row name(s) {clashing} repeat a model name {list(MODELS)}, or another extra row at the same "
            "shape or with another model or options; expected a name of its own for each recipe (one name may "
            "list several shapes), e.g. dbn_large"
        )
    misnamed = [e.name for e in extra if e.name.startswith("dbn") != (e.model == "dbn")]
    if misnamed:
        raise UsageError(
            f"extra row name(s) {misnamed}: a DBN row's name starts with 'dbn' (dbn_large, dbn_textbook) and "
            "only a DBN row's does, so the table tells pretrained starts from schemes; rename the row(s)"
        )


def _check_table(cfg: Namespace, table: list[Cell]) -> None:
    """Refuse what would waste hours or mislead: repeated cells, clashing names, an empty table,
    a label option the runner would ignore."""
    for option in ("models", "hidden", "seeds", "labels"):  # a repeat would pool its cells as more seeds
        values = getattr(cfg, option)
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise UsageError(f"--{option} lists {repeated} more than once; expected each value once: drop the repeats")
    _check_row_names(cfg.extra)
    for row in cfg.extra:
        _row_options(row, cfg)
    if dict(cfg.data.init_args).get("num_labels") is not None:
        raise UsageError(
            "--data.num_labels is set, but each cell sets its own label budget from --labels; move the "
            f"value into --labels (e.g. --labels '[{cfg.data.init_args.num_labels}]')"
        )
    if not table:
        why = [f"--{o} is empty" for o in ("seeds", "labels") if not getattr(cfg, o)]
        if not (cfg.models and cfg.hidden or cfg.extra):
            why.append("no row (--models and --hidden are empty, or --extra is)")
        raise UsageError(
            f"no cells to run: {', '.join(why)}; expected at least one seed, one label budget (null = "
            "all) and one row (a model of --models at a shape of --hidden, or an --extra row)"
        )
    try:  # an unknown accelerator, or more devices than it has, would fail in the first cell
        make_trainer(1, dict(accelerator=cfg.accelerator, devices=cfg.devices))
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        raise UsageError(f"--accelerator {cfg.accelerator} --devices {cfg.devices}: {err}") from err


def _plan(cfg: Namespace, results: ResultsFile, out: Path) -> tuple[list[Cell], dict]:
    """The cells still to run and each budget's data, set up; every model built once first, so a
    bad value, or a finished cell run with other settings, fails before the first cell."""
    table = cells(cfg)
    _check_table(cfg, table)
    datamodules = {labels: _datamodule(cfg, labels) for labels in cfg.labels}
    for data in datamodules.values():
        data.prepare_data()
        data.setup("fit")
    done, todo, changed = results.done, [], []
    for cell in table:
        data = datamodules[cell.labels]
        try:
            model = _model(cell, cfg, data)
        except UsageError as err:
            group = "dbn" if cell.model == "dbn" else "baseline"
            raise UsageError(
                f"cannot build {cell.name} with hidden={list(cell.hidden)} from --{group} and the row's "
                f"options: {_flags(err, group)}"
            ) from err
        if cell.model == "dbn" and model.hparams.pretrained and not _stack_cache(out, cell, model, data).exists():
            try:  # --dbn.pretrained: missing, corrupt or wrong-shape files fail now, not at the first DBN cell
                import_stack(model, data)
            except (ValueError, OSError) as err:
                raise UsageError(
                    f"--dbn.pretrained, the stack {cell.name} with hidden={list(cell.hidden)} starts "
                    f"from: {_flags(err, 'dbn')}. Nothing was run"
                ) from err
        row = done.get(cell.key())
        if row is None:
            todo.append(cell)
        elif found := _changes(row.get("settings") or {}, cell_settings(model, data, _epochs(cfg, data), cfg)):
            changed.append((cell, found))
    if changed:
        c, found = changed[0]
        raise UsageError(
            f"{results.path} already holds {len(changed)} of these cells (e.g. {c.name} {list(c.hidden)} "
            f"seed {c.seed} labels {c.labels}) run with other settings ({'; '.join(found)}). "
            "Nothing was run or overwritten; use a new --out for the new settings"
        )
    return todo, datamodules


def _changes(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How a finished row's settings differ from the cell's now (:func:`dbn_init.runs.differences`,
    which reads class paths by the class they import, and the fine-tuning epochs)."""
    if not then:  # a row that records no settings: nothing to tell it from the command by
        return []
    found = differences(then, {k: now[k] for k in ("model", "data")})
    for key, default in _FIT_SETTINGS.items():
        if then.get(key, default) != now[key]:
            found.append(f"fine-tuning {key}: {then.get(key, default)!r} in the file, {now[key]!r} here")
    return found


def _output_folder(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {out} is a file; expected a folder (new, or one this runner wrote): pick another --out"
        )
    if not (out / "results.json").exists() and (foreign := [n for n in _OUTPUTS if (out / n).exists()]):
        raise FileTakenError(
            f"{out} holds {foreign} but no results.json, so they are not this runner's and would be "
            "overwritten; nothing was run: move them away or pick another --out"
        )
    return out


def _lead() -> bool:
    """Whether this process writes: under ``--devices 2`` or more Lightning re-runs this command in
    every rank, and each runs every cell with the others, but only rank 0 saves and prints."""
    return rank_zero_only.rank == 0


def run(cfg: Namespace) -> list[dict[str, Any]]:
    """Run every unfinished cell of ``cfg``, saving after each; returns all rows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = _output_folder(cfg.out)
    results = ResultsFile(out / "results.json")
    todo, datamodules = _plan(cfg, results, out)
    config = json.loads(json.dumps(cfg.as_dict(), default=str))
    config.pop("config", None)
    if todo:
        out.mkdir(parents=True, exist_ok=True)
        if config not in results.configs:
            results.configs.append(config)
        if _lead():  # before a cell writes anything, so an interrupted first cell leaves a folder that resumes
            results.save()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not _lead()) as bar:
        task = bar.add_task("cells", total=len(todo))
        for cell in todo:
            entry.check()
            bar.update(task, description=f"{cell.name} {list(cell.hidden)} seed {cell.seed} labels {cell.labels}")
            results.runs.append(run_cell(cell, cfg, datamodules[cell.labels], out))
            if _lead():
                results.save()
            bar.advance(task)
    if results.runs and _lead():
        with replacing(out / "results.md") as tmp:
            Path(tmp).write_text(summarize(results.runs))
        plot_curves(results.runs, out / "curves.png")
    return results.runs


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = build_parser()
    cfg = parser.parse_args(shipped(sys.argv[1:] if argv is None else argv))
    try:  # a usage error or a signal ends it as entry.command ends train.py, here as a return code
        runs = entry.command(lambda: run(cfg), "resume it: run the same command again (finished cells are kept)",
                             prog=f"{parser.prog}: error")  # fmt: skip
    except SystemExit as stop:
        return stop.code
    if _lead():
        print(summarize(runs) if runs else "no cells")  # the command's answer, for the terminal
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

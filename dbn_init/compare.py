"""The comparison runner: every (initialisation x architecture x seed x label budget) cell.

    python -m dbn_init.compare --config configs/compare_digits.yaml [--data.root DIR] [--out DIR]

Each cell runs the same pipeline as ``train.py``: a DataModule, a :class:`~dbn_init.models.DBN`
(pretraining stages, transfer) or a :class:`~dbn_init.models.Baseline`, one fine-tuning fit of
``max_epochs`` epochs, then a test of the final weights. Writes to ``--out``:

- ``results.json``: ``{"configs": [...], "runs": [{"model", "hidden", "seed", "labels", "test_acc",
  "val_acc", "val_curve", "fit_seconds", "pretrain_seconds", ...}]}``, written before the first
  cell and rewritten atomically after every cell, so a rerun with the same ``--out`` resumes,
  skipping finished cells (a folder holding the files below without it is refused, not overwritten);
- ``results.md``: mean ± std test accuracy over seeds per cell, best per column in bold, times;
- ``curves.png``: validation accuracy per epoch per model (mean over seeds), a panel per
  architecture; ``filters.png``: first-layer RBM filters of the first DBN cell.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.seed import max_seed_value, min_seed_value
from lightning.pytorch import Callback, Trainer, seed_everything

from .cli import CLIParser
from .data import LOADING_OPTIONS, ImageDataModule
from .init import INIT_SCHEMES
from .io import load_stack, replacing, save_stack
from .models import DBN, SPEED_OPTIONS, Baseline
from .plots import image_grid, save_curves, save_image_grid

__all__ = ["Cell", "main", "build_parser", "run", "summarize"]

MODELS = ["dbn", *INIT_SCHEMES]


@dataclass(frozen=True)
class Cell:
    """One run of the table: a model name ("dbn" or a scheme) at one shape, seed and label budget."""

    name: str  # the row label, e.g. "dbn", "dbn_large", "xavier_uniform"
    model: str  # "dbn" or an init scheme
    hidden: tuple[int, ...]
    seed: int
    labels: Optional[int]

    def key(self) -> tuple:
        return (self.name, self.hidden, self.seed, self.labels)


def build_parser() -> ArgumentParser:
    parser = CLIParser(prog="python -m dbn_init.compare", description=__doc__.split("\n\n")[0], default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a configs/compare_*.yaml file")
    parser.add_subclass_arguments(ImageDataModule, "data", required=True, help="the DataModule, as in train.py")
    parser.add_argument("--models", type=list[str], default=MODELS, help=f"rows of the table, from {MODELS}")
    parser.add_argument("--hidden", type=list[list[int]], default=[[256, 256]], help="architectures (hidden sizes)")
    parser.add_argument("--extra", type=list[dict], default=[],
                        help="extra rows with their own shape: [{name: dbn_large, model: dbn, hidden: [500, 500, 2000]}]")
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2])
    parser.add_argument("--labels", type=list[Optional[int]], default=[None],
                        help="label budgets for fine-tuning (null = all); pretraining always sees every image")
    parser.add_argument("--max_epochs", type=int, default=15, help="fine-tuning epochs of every cell")
    parser.add_argument("--min_steps", type=int, default=0,
                        help="at least this many fine-tuning steps (more epochs on small label budgets)")
    parser.add_argument("--dbn", type=dict, default={}, help="DBN init arguments shared by all DBN rows")
    parser.add_argument("--baseline", type=dict, default={}, help="Baseline init arguments shared by all scheme rows")
    parser.add_argument("--accelerator", type=str, default="auto")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", type=str, default="results/compare", help="output folder; a rerun resumes it")
    return parser


_FIXED = {"input_size", "num_classes", "hidden", "init"}  # set by the cell and the data, not by options


def _check_options(cfg: Namespace) -> None:
    """Refuse bad options before hours of compute: unknown names, repeated cells, out-of-range
    numbers, and model or data arguments their classes refuse (each built once, untrained)."""
    unknown = [m for m in cfg.models if m not in MODELS]
    unknown += [e.get("model") for e in cfg.extra if e.get("model") not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected names from {MODELS}")
    for extra in cfg.extra:
        if set(extra) != {"name", "model", "hidden"} or not isinstance(extra["hidden"], list):
            raise ValueError(f"each extra row needs exactly name, model and hidden (a list of sizes), got {extra}")
    for label, cls, options in (("dbn", DBN, cfg.dbn), ("baseline", Baseline, cfg.baseline)):
        fixed = sorted(set(options) & _FIXED)
        if fixed:
            raise ValueError(f"--{label} sets {fixed}, which each cell sets itself (init from --models, hidden from "
                             f"--hidden, input_size and num_classes from the data); remove them from --{label}")
        allowed = set(inspect.signature(cls).parameters) - _FIXED
        bad = sorted(set(options) - allowed)
        if bad:
            raise ValueError(f"unknown {label} option(s) {bad}; expected some of {sorted(allowed)}")
    # A repeated value would run its cells twice and pool them in the table as if they were more seeds.
    for option in ("models", "hidden", "seeds", "labels"):
        values = getattr(cfg, option)
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise ValueError(f"--{option} lists {repeated} more than once; expected each value once: drop the repeats")
    names = [e["name"] for e in cfg.extra]
    clashing = [n for i, n in enumerate(names) if n in MODELS or n in names[:i]]
    if clashing:
        raise ValueError(f"extra row name(s) {clashing} repeat a model name {MODELS} or another extra row; "
                         "expected a name of its own for each extra row, e.g. dbn_large")
    if cfg.max_epochs < 1:
        raise ValueError(f"expected --max_epochs >= 1 (fine-tuning epochs of every cell), got {cfg.max_epochs}")
    if cfg.min_steps < 0:
        raise ValueError(f"expected --min_steps >= 0 (0 adds no steps), got {cfg.min_steps}")
    bad_seeds = [s for s in cfg.seeds if not min_seed_value <= s <= max_seed_value]
    if bad_seeds:
        raise ValueError(f"expected --seeds in {min_seed_value}..{max_seed_value} (what numpy accepts), "
                         f"got {bad_seeds}")
    if cfg.devices < 1:
        raise ValueError(f"expected --devices >= 1 (devices each cell trains on), got {cfg.devices}")
    try:  # an unknown accelerator, or more devices than it has, would fail at the first cell's Trainer
        _trainer(cfg, 1, [])
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        raise ValueError(f"--accelerator {cfg.accelerator} --devices {cfg.devices}: {err}") from err
    table = cells(cfg)
    if not table:
        why = [f"--{o} is empty" for o in ("seeds", "labels") if not getattr(cfg, o)]
        if not (cfg.models and cfg.hidden or cfg.extra):
            why.append("no row (--models and --hidden are empty, or --extra is)")
        raise ValueError(f"no cells to run: {', '.join(why)}; expected at least one seed, one label budget "
                         "(null = all) and one row (a model of --models at a shape of --hidden, or an --extra row)")
    # The constructors check their arguments (num_labels against the classes, cd_k, rates, sizes):
    # build each data module and each distinct model once, so a bad value fails before the first cell.
    datamodules = [_datamodule(cfg, labels) for labels in cfg.labels]
    for cell in {(c.model, c.hidden): c for c in table}.values():
        option = "dbn" if cell.model == "dbn" else "baseline"
        try:
            _model(cell, cfg, datamodules[0])
        except (ValueError, TypeError) as err:
            raise ValueError(f"cannot build {cell.name} with hidden={list(cell.hidden)} and --{option} "
                             f"{getattr(cfg, option)}: {err}; fix --{option} or the sizes") from err


_DATA_LOCATION = LOADING_OPTIONS | {"num_labels"}  # num_labels is the cell's own labels, part of its key
# What summarize and plot_curves read from every row of results.json.
_ROW_KEYS = ("model", "hidden", "seed", "labels", "test_acc", "val_curve", "fit_seconds", "pretrain_seconds")
_OUTPUTS = ("results.md", "curves.png", "filters.png", "pretrained")  # what a run writes besides results.json
_FINE_TUNING = {"lr", "optimizer", "weight_decay", "momentum"}  # DBN options pretraining ignores


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_settings(value: Any) -> bool:
    """The parts of a row's ``settings`` (:func:`cell_settings`) that :func:`_effective` reads."""
    data = value.get("data") if isinstance(value, dict) else None
    return (isinstance(data, dict) and _is_int(data.get("batch_size")) and data["batch_size"] > 0
            and isinstance(value.get("options"), dict) and _is_int(value.get("max_epochs"))
            and _is_int(value.get("min_steps")))


# What each field of a results row must hold for the code that reads it back (summarize,
# plot_curves, the resume key and the settings check). The last three may be null or absent:
# rows written before they were recorded, or by hand, lack them.
_ROW_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": ("a string", lambda v: isinstance(v, str)),
    "hidden": ("a non-empty list of positive integers",
               lambda v: isinstance(v, list) and bool(v) and all(_is_int(h) and h > 0 for h in v)),
    "seed": ("an integer", _is_int),
    "labels": ("an integer, or null for all labels", lambda v: v is None or _is_int(v)),
    "test_acc": ("a number", _is_number),
    "val_curve": ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_number, v))),
    "fit_seconds": ("a number", _is_number),
    "pretrain_seconds": ("a number", _is_number),
    "epochs": ("a positive integer or null", lambda v: v is None or _is_int(v) and v > 0),
    "train_size": ("a positive integer or null", lambda v: v is None or _is_int(v) and v > 0),
    "settings": ("null or an object with data (holding a positive batch_size), options, max_epochs and min_steps",
                 lambda v: v is None or _is_settings(v)),
}
_JSON_TYPES = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
               dict: "an object", type(None): "null"}


def cell_settings(cfg: Namespace, cell: Cell) -> dict[str, Any]:
    """Everything besides the cell's key that decides its result. A finished run counts for a
    cell only when these match, so a rerun with changed options never passes stale results off
    as new ones."""
    data = {k: v for k, v in dict(cfg.data.init_args).items() if k not in _DATA_LOCATION}
    options = {k: v for k, v in dict(cfg.dbn if cell.model == "dbn" else cfg.baseline).items() if k not in SPEED_OPTIONS}
    return json.loads(json.dumps({"data": {"class_path": cfg.data.class_path, **data}, "options": options,
                                  "max_epochs": cfg.max_epochs, "min_steps": cfg.min_steps}, default=str))


def _with_defaults(options: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """Model options with the model's own defaults filled in: a default written out in one config
    and left out of another is the same setting."""
    cls = DBN if cell.model == "dbn" else Baseline
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not p.empty and name not in _FIXED | SPEED_OPTIONS}
    return json.loads(json.dumps({**defaults, **options}, default=str))


def _effective(settings: dict[str, Any], cell: Cell, train_size: int) -> dict[str, Any]:
    """What decides a finished cell's result: its data, its options with defaults, and the epochs it
    fine-tuned for (``min_steps`` counts only where it added epochs to ``max_epochs``)."""
    batches = math.ceil(train_size / settings["data"]["batch_size"])
    return {"data": settings["data"], "options": _with_defaults(settings["options"], cell),
            "epochs": max(settings["max_epochs"], math.ceil(settings["min_steps"] / batches))}


def _stack_cache(out: Path, cell: Cell, settings: dict[str, Any]) -> Path:
    """Where a DBN cell's pretrained stack is cached: keyed by everything pretraining depends on
    (the fine-tuning options and label budget aside), so budgets share it and changes miss it."""
    pretraining = {"data": settings["data"], "options": {k: v for k, v in _with_defaults(settings["options"], cell).items()
                                                         if k not in _FINE_TUNING}}
    digest = hashlib.sha256(json.dumps(pretraining, sort_keys=True).encode()).hexdigest()[:10]
    return out / "pretrained" / f"{cell.name}-{'-'.join(map(str, cell.hidden))}-seed{cell.seed}-{digest}.safetensors"


def cells(cfg: Namespace) -> list[Cell]:
    rows = [(m, m, tuple(h)) for h in cfg.hidden for m in cfg.models]
    rows += [(e["name"], e["model"], tuple(e["hidden"])) for e in cfg.extra]
    return [Cell(name, model, hidden, seed, labels)
            for labels in cfg.labels for name, model, hidden in rows for seed in cfg.seeds]


class _ValCurve(Callback):
    """Collects validation accuracy after every fine-tuning epoch (not the sanity check)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        # on_validation_end, not _epoch_end: the module logs val_acc in its own epoch-end hook,
        # which Lightning calls after the callbacks' one.
        if not trainer.sanity_checking and "val_acc" in trainer.callback_metrics:
            self.values.append(round(float(trainer.callback_metrics["val_acc"]), 6))


def _datamodule(cfg: Namespace, labels: Optional[int]) -> ImageDataModule:
    module, _, name = cfg.data.class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**dict(cfg.data.init_args), "num_labels": labels})


def _trainer(cfg: Namespace, epochs: int, callbacks: list[Callback], val_every: int = 1) -> Trainer:
    # Small label budgets train for more epochs (min_steps); validating every `val_every` epochs
    # keeps about max_epochs points on every curve.
    return Trainer(max_epochs=epochs, accelerator=cfg.accelerator, devices=cfg.devices, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0, callbacks=callbacks, check_val_every_n_epoch=val_every)


def _model(cell: Cell, cfg: Namespace, data: ImageDataModule) -> DBN | Baseline:
    """The cell's untrained model: a DBN with ``--dbn`` or a Baseline with ``--baseline``."""
    sizes = dict(input_size=data.input_size, num_classes=data.num_classes, hidden=list(cell.hidden))
    if cell.model == "dbn":
        return DBN(**sizes, **{"pretrain_seed": cell.seed, **cfg.dbn})
    return Baseline(**sizes, init=cell.model, **cfg.baseline)


def run_cell(cell: Cell, cfg: Namespace, data: ImageDataModule, out: Path) -> dict[str, Any]:
    """Run one cell end to end and return its results row."""
    seed_everything(cell.seed, verbose=False)
    model = _model(cell, cfg, data)
    pretrain_seconds, cached, settings = 0.0, False, cell_settings(cfg, cell)
    if cell.model == "dbn":
        # Pretraining never sees labels, so label budgets of one (shape, seed) share one stack.
        cache = _stack_cache(out, cell, settings)
        cached = cache.exists()
        if cached:
            try:
                stack = load_stack(cache, input_size=data.input_size, hidden=list(cell.hidden))
            except ValueError as err:
                raise ValueError(f"{err}; it is this runner's cached pretrained stack: delete {cache} to pretrain "
                                 "it again") from err
            model.load_rbms(stack.rbms)
        start = time.perf_counter()
        model.pretrain(data, lambda stage, epochs: _trainer(cfg, epochs, []))
        pretrain_seconds = time.perf_counter() - start
        if not cached:
            cache.parent.mkdir(exist_ok=True)
            save_stack(model.rbms, cache, scaling=data.scaling)
        filters = out / "filters.png"
        if not filters.exists():
            grid = image_grid(model.rbms[0].weight[:100], data.image_shape)
            save_image_grid(grid, filters, f"RBM 1 filters ({cell.name}, hidden={list(cell.hidden)}, seed {cell.seed})")
    data.setup("fit")
    batches = math.ceil(len(data.train_x) / data.batch_size)
    epochs = max(cfg.max_epochs, math.ceil(cfg.min_steps / batches))
    curve = _ValCurve()
    trainer = _trainer(cfg, epochs, [curve], val_every=max(1, epochs // cfg.max_epochs))
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - start
    test = trainer.test(model, datamodule=data, verbose=False)[0]
    return {
        "model": cell.name, "hidden": list(cell.hidden), "seed": cell.seed, "labels": cell.labels,
        "test_acc": round(float(test["test_acc"]), 6), "test_loss": round(float(test["test_loss"]), 6),
        "val_acc": curve.values[-1] if curve.values else None, "val_curve": curve.values,
        "epochs": epochs, "fit_seconds": round(fit_seconds, 2), "pretrain_seconds": round(pretrain_seconds, 2),
        "pretrained_from_cache": cached,
        "dataset": getattr(data, "dataset_name", type(data).__name__), "train_size": len(data.train_x),
        "settings": settings,
    }


def _write_atomic(path: Path, text: str) -> None:
    """Temp file + rename (:func:`dbn_init.io.replacing`): a crash mid-write leaves the previous file intact."""
    with replacing(path) as tmp:
        Path(tmp).write_text(text)


def _fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def summarize(runs: list[dict[str, Any]]) -> str:
    """The Markdown table: rows = models, columns = (architecture, label budget)."""
    columns = sorted({(tuple(r["hidden"]), r["labels"]) for r in runs},
                     key=lambda c: (c[1] is None, c[1] or 0, len(c[0]), c[0]))
    rows = list(dict.fromkeys(r["model"] for r in runs))
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], tuple(r["hidden"]), r["labels"]), []).append(r)

    def header(col):
        arch = "-".join(map(str, col[0]))
        return f"{arch}, {'all' if col[1] is None else col[1]} labels"

    best = {}
    for col in columns:
        means = {m: statistics.fmean(x["test_acc"] for x in groups[(m, *col)]) for m in rows if (m, *col) in groups}
        best[col] = max(means.values()) if means else None
    lines = ["Test accuracy (%), mean ± std over seeds (n = seeds); best per column in bold.", "",
             "| model | " + " | ".join(header(c) for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for m in rows:
        cells_md = []
        for col in columns:
            group = groups.get((m, *col))
            if not group:
                cells_md.append("")
                continue
            accs = [x["test_acc"] for x in group]
            text = f"{_fmt(accs)} (n={len(accs)})"
            cells_md.append(f"**{text}**" if math.isclose(statistics.fmean(accs), best[col]) else text)
        lines.append(f"| {m} | " + " | ".join(cells_md) + " |")
    lines += ["", "Mean seconds per run: pretraining + fine-tuning. Pretraining never sees labels, so the label",
              "budgets of one (shape, seed) share one pretrained stack: its cost shows in the first budget run.", "",
              "| model | " + " | ".join(header(c) for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for m in rows:
        cells_md = []
        for col in columns:
            group = groups.get((m, *col))
            if group:
                pre = statistics.fmean(x["pretrain_seconds"] for x in group)
                fit = statistics.fmean(x["fit_seconds"] for x in group)
                cells_md.append(f"{pre:.0f} + {fit:.0f}")
            else:
                cells_md.append("")
        lines.append(f"| {m} | " + " | ".join(cells_md) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    """Mean validation curve per model, one panel per (architecture, label budget)."""
    panels: dict[str, dict[str, list[float]]] = {}
    groups: dict[tuple, list[list[float]]] = {}
    for r in runs:
        if r["val_curve"]:
            groups.setdefault((tuple(r["hidden"]), r["labels"], r["model"]), []).append(r["val_curve"])
    for (hidden, labels, model), curves in groups.items():
        n = min(map(len, curves))
        title = "-".join(map(str, hidden)) + ("" if labels is None else f", {labels} labels")
        panels.setdefault(title, {})[model] = [statistics.fmean(c[i] for c in curves) for i in range(n)]
    save_curves(panels, path, xlabel="validation check (each epoch; each k-th for small budgets)")


def _read_results(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple, dict[str, Any]]]:
    """The runs, configs and finished cells (by :meth:`Cell.key`) of a results.json of this runner;
    anything else is refused, so nothing foreign is overwritten."""
    try:
        saved = json.loads(path.read_text())
        runs, configs = saved["runs"], saved.get("configs", [])
        if not isinstance(runs, list) or not isinstance(configs, list):
            raise TypeError("expected lists under 'runs' and 'configs'")
        for r in runs:
            if not isinstance(r, dict) or not set(_ROW_KEYS) <= set(r):
                raise ValueError(f"expected every run to hold {list(_ROW_KEYS)}, got {str(r)[:80]}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a results file of this runner ({err}); move it away or "
                         "pick another --out, so nothing is overwritten") from err
    # Its rows, edited by hand, would otherwise pass here and break the table after the new cells ran.
    bad = [(i, r, field, what) for i, r in enumerate(runs) for field, (what, ok) in _ROW_TYPES.items()
           if field in r and not ok(r[field])]
    if bad:
        i, r, field, what = bad[0]
        value = json.dumps(r[field])
        more = f" (and {len(bad) - 1} more bad field(s))" if len(bad) > 1 else ""
        raise ValueError(
            f"{path}: runs[{i}] (model {json.dumps(r['model'])[:40]}, seed {json.dumps(r['seed'])[:20]}) has "
            f"\"{field}\": {value[:80]}{'...' if len(value) > 80 else ''}, {_JSON_TYPES.get(type(r[field]), 'a value')}; "
            f"expected {what}{more}. Nothing was run or overwritten: write the value as {what} (as this runner "
            "does), or delete that row so its cell runs again"
        )
    done = {(r["model"], tuple(r["hidden"]), r["seed"], r["labels"]): r for r in runs}
    return runs, configs, done


def _check_pretrained(cfg: Namespace, todo: list[Cell], data: ImageDataModule, out: Path) -> None:
    """Load ``--dbn pretrained`` for each DBN shape about to pretrain (its stack not cached yet), so a
    missing, corrupt, foreign or wrong-shape stack, or one scaled unlike the data, is refused
    before the first cell rather than at the first DBN cell, after the others ran."""
    path = cfg.dbn.get("pretrained")
    if not path:
        return
    starting = {c.hidden: c for c in todo
                if c.model == "dbn" and not _stack_cache(out, c, cell_settings(cfg, c)).exists()}
    for cell in starting.values():
        try:  # what DBN.pretrain does first, at the first DBN cell
            _model(cell, cfg, data).import_pretrained(getattr(data, "scaling", None))
        except (FileNotFoundError, ValueError) as err:  # the same kind, with the row it concerns
            raise type(err)(f"--dbn pretrained, the stack {cell.name} with hidden={list(cell.hidden)} starts from: "
                            f"{err}. Nothing was run") from err


def run(cfg: Namespace) -> list[dict[str, Any]]:
    """Run every unfinished cell of ``cfg``, saving after each; returns all runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    _check_options(cfg)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder (new, or one this runner wrote): "
                         "pick another --out")
    results_path = out / "results.json"
    runs: list[dict[str, Any]] = []
    configs: list[dict[str, Any]] = []  # every config that ran cells in this folder
    done: dict[tuple, dict[str, Any]] = {}
    if results_path.exists():
        runs, configs, done = _read_results(results_path)
    elif foreign := [name for name in _OUTPUTS if (out / name).exists()]:
        raise ValueError(f"{out} holds {foreign} but no results.json, so they are not this runner's and would be "
                         "overwritten; nothing was run: move them away or pick another --out")

    def differs(cell: Cell) -> bool:
        row = done.get(cell.key())
        if row is None:
            return False
        now, then, size = cell_settings(cfg, cell), row.get("settings"), row.get("train_size")
        if then is None:  # written before settings were recorded: its fine-tuning epochs are what it records
            return None not in (size, row.get("epochs")) and _effective(now, cell, size)["epochs"] != row["epochs"]
        if size is None:  # a hand-made row: its settings as written
            return now != then
        return _effective(now, cell, size) != _effective(then, cell, size)

    changed = [c for c in cells(cfg) if differs(c)]
    if changed:
        c, row = changed[0], done[changed[0].key()]
        then, now = row.get("settings"), cell_settings(cfg, c)
        if then is None:
            then, now = (f"fine-tuning for {n} epochs" for n in (row["epochs"], _effective(now, c, row["train_size"])["epochs"]))
        raise ValueError(
            f"{results_path} already holds {len(changed)} of these cells (e.g. {c.name} {list(c.hidden)} seed "
            f"{c.seed} labels {c.labels}) run with other settings: {then} there, {now} now. Nothing was run or "
            "overwritten; use a new --out for the new settings"
        )
    todo = [c for c in cells(cfg) if c.key() not in done]
    config = json.loads(json.dumps(cfg.as_dict(), default=str))
    config.pop("config", None)
    if todo and config not in configs:
        configs.append(config)
    # Load every label budget's data now: missing files, or a budget larger than the data, fail before any cell.
    datamodules = {labels: _datamodule(cfg, labels) for labels in dict.fromkeys(c.labels for c in todo)}
    if todo:
        _check_pretrained(cfg, todo, datamodules[todo[0].labels], out)
    for data in datamodules.values():
        data.prepare_data()
        data.setup("fit")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"cannot write to the output folder {out}; pick another with --out DIR")

    def save() -> None:
        _write_atomic(results_path, json.dumps({"configs": configs, "runs": runs}, indent=1) + "\n")

    if todo:
        save()  # before a cell writes anything, so an interrupted first cell leaves a folder this runner resumes
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("cells", total=len(todo))
        for cell in todo:
            bar.update(task, description=f"{cell.name} {list(cell.hidden)} seed {cell.seed} labels {cell.labels}")
            runs.append(run_cell(cell, cfg, datamodules[cell.labels], out))
            save()
            bar.advance(task)
    if runs:
        _write_atomic(out / "results.md", summarize(runs))
        plot_curves(runs, out / "curves.png")
    return runs


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        run(cfg)
    except (ValueError, OSError) as err:  # user errors: one line, no traceback
        print(f"{parser.prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print((Path(cfg.out) / "results.md").read_text())  # the command's answer, for the terminal
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

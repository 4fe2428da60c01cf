"""The comparison's results file, ``results.json``: its rows, their checks, and a save that loses nothing.

``{"configs": [...], "runs": [{"model", "hidden", "seed", "labels", "test_acc", "val_curve",
"fit_seconds", "pretrain_seconds", "settings", ...}]}``. Every save happens under a lock file
beside it and merges the rows another process saved meanwhile, then replaces the file atomically,
so two runners on one ``--out`` lose no finished cell and a crash mid-write leaves the last save.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from ..constraints import UsageError
from ..io import replacing

__all__ = ["ROW_TYPES", "ResultsFile", "row_key"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What each field of a row must hold for the code that reads it back (the report, the resume key
# and the settings check); the first seven must be present, and a test score (_SCORES).
ROW_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": ("a string", lambda v: isinstance(v, str)),
    "hidden": (
        "a non-empty list of positive integers",
        lambda v: isinstance(v, list) and bool(v) and all(_is_int(h) and h > 0 for h in v),
    ),
    "seed": ("an integer", _is_int),
    "labels": ("an integer, or null for all labels", lambda v: v is None or _is_int(v)),
    "val_curve": ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_number, v))),
    "fit_seconds": ("a number", _is_number),
    "pretrain_seconds": ("a number", _is_number),
    "epochs": ("a positive integer or null", lambda v: v is None or _is_int(v) and v > 0),
    "epochs_run": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "settings": ("an object", lambda v: isinstance(v, dict)),
    **{
        key: ("a number, or null for a run not tested (--test false)", lambda v: v is None or _is_number(v))
        for key in ("test_acc", "test_r2", "test_rmse")
    },
}
_REQUIRED = tuple(ROW_TYPES)[:7]
_SCORES = ("test_acc", "test_r2", "test_sse")  # a classification's, a regression's, a reconstruction's
_JSON_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def row_key(row: dict[str, Any]) -> tuple:
    """A row's cell: (row name, hidden sizes, seed, label budget)."""
    return row["model"], tuple(row["hidden"]), row["seed"], row["labels"]


class ResultsFile:
    """``results.json`` in ``folder``: the configs that ran there and the finished rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.configs: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        if path.exists():
            self.configs, self.runs = _read(path)

    @property
    def done(self) -> dict[tuple, dict[str, Any]]:
        return {row_key(r): r for r in self.runs}

    def save(self) -> None:
        """Merge what another runner saved meanwhile (its rows win nothing over ours: a cell is
        one row), then write atomically."""
        with FileLock(self.path.with_name(f".{self.path.name}.lock")):
            if self.path.exists():
                configs, runs = _read(self.path)
                ours = {row_key(r) for r in self.runs}
                self.runs += [r for r in runs if row_key(r) not in ours]
                self.configs += [c for c in configs if c not in self.configs]
            with replacing(self.path) as tmp:
                Path(tmp).write_text(json.dumps({"configs": self.configs, "runs": self.runs}, indent=1) + "\n")


def _read(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The configs and rows of a results.json of this runner; anything else is refused, so
    nothing foreign is overwritten."""
    try:
        saved = json.loads(path.read_text())
        runs, configs = saved["runs"], saved.get("configs", [])
        if not isinstance(runs, list) or not isinstance(configs, list):
            raise TypeError("expected lists under 'runs' and 'configs'")
        for r in runs:
            if not isinstance(r, dict) or not set(_REQUIRED) <= set(r) or not set(_SCORES) & set(r):
                raise ValueError(
                    f"expected every run to hold {list(_REQUIRED)} and one of {list(_SCORES)}, got {str(r)[:80]}"
                )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"{path} is not a results file of this runner ({err}); move it away or pick another --out, "
            "so nothing is overwritten"
        ) from err
    bad = [
        (i, r, name, what)
        for i, r in enumerate(runs)
        for name, (what, ok) in ROW_TYPES.items()
        if name in r and not ok(r[name])
    ]
    if bad:
        i, r, name, what = bad[0]
        value = json.dumps(r[name])
        more = f" (and {len(bad) - 1} more bad field(s))" if len(bad) > 1 else ""
        raise UsageError(
            f"{path}: runs[{i}] (model {json.dumps(r['model'])[:40]}, seed {json.dumps(r['seed'])[:20]}) has "
            f'"{name}": {value[:80]}{"..." if len(value) > 80 else ""}, {_JSON_TYPES.get(type(r[name]), "a value")}; '
            f"expected {what}{more}. Nothing was run or overwritten: write the value as {what} (as this runner does), "
            "or delete that row so its cell runs again"
        )
    return configs, runs

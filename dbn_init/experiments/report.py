"""The comparison's report: the Markdown table of results.json's rows and the validation curves."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ..plots import save_curves

__all__ = ["summarize", "plot_curves"]


def _fmt(values: list[float], scale: float) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * mean:.{2 if scale == 100 else 3}f} ± {scale * std:.{2 if scale == 100 else 3}f}"


def summarize(runs: list[dict[str, Any]]) -> str:
    """The Markdown tables: rows = models, columns = (architecture, label budget). Test accuracy or
    R² (when the runs were tested), the same on validation at the selected epoch, the epochs each
    run used, and the seconds."""
    columns = sorted(
        {(tuple(r["hidden"]), r["labels"]) for r in runs}, key=lambda c: (c[1] is None, c[1] or 0, len(c[0]), c[0])
    )
    rows = list(dict.fromkeys(r["model"] for r in runs))
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], tuple(r["hidden"]), r["labels"]), []).append(r)
    table = _Table(rows, columns, groups)
    lines: list[str] = []
    for key, title, scale, best in _SCORED:
        if any(r.get(key) is not None for r in runs):
            title = f"{title}, mean ± std over seeds (n = seeds); best per column in bold."
            lines += table.accuracy(key, title, scale, best)
    if any("epochs_run" in r for r in runs):
        lines += table.cells(
            "Fine-tuning epochs, mean over seeds: run (of the budget), and the epoch whose weights were scored.",
            lambda group: (
                f"{_mean(group, 'epochs_run'):.0f} of {_mean(group, 'epochs'):.0f}, "
                f"scored {_mean(group, 'selected_epoch'):.1f}"
            ),
        )
    lines += table.cells(
        "Mean seconds per run: pretraining + fine-tuning. Pretraining never sees labels, so the label\n"
        "budgets of one (shape, seed) share one pretrained stack: its cost shows in the first budget run.",
        lambda group: f"{_mean(group, 'pretrain_seconds'):.0f} + {_mean(group, 'fit_seconds'):.0f}",
    )
    return "\n".join(lines[:-1]) + "\n"


# The scores a row may hold: (key, the table's title, the factor it is shown at, which is best).
_SCORED = (
    ("test_acc", "Test accuracy (%)", 100, max),
    ("test_r2", "Test R²", 1, max),
    ("test_sse", "Test squared error per row (summed over its features)", 1, min),
    ("val_acc", "Validation accuracy (%) at the tested epoch", 100, max),
    ("val_r2", "Validation R² at the tested epoch", 1, max),
    ("val_sse", "Validation squared error per row at the tested epoch", 1, min),
)


def _mean(group: list[dict], key: str) -> float:
    values = [x[key] for x in group if x.get(key) is not None]
    return statistics.fmean(values) if values else math.nan


class _Table:
    """Markdown tables over one grid of (model rows) x (architecture, label budget) columns."""

    def __init__(self, rows: list[str], columns: list[tuple], groups: dict[tuple, list[dict]]) -> None:
        self.rows, self.columns, self.groups = rows, columns, groups

    def _header(self, title: str) -> list[str]:
        names = [
            f"{'-'.join(map(str, hidden))}, {'all' if labels is None else labels} labels"
            for hidden, labels in self.columns
        ]
        return [*title.split("\n"), "", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(self.columns)]

    def cells(self, title: str, text) -> list[str]:
        """A table whose cell is ``text(runs of the cell)``, blank where there are none; then a blank line."""
        lines = self._header(title)
        for m in self.rows:
            row = [text(g) if (g := self.groups.get((m, *col))) else "" for col in self.columns]
            lines.append(f"| {m} | " + " | ".join(row) + " |")
        return [*lines, ""]

    def accuracy(self, key: str, title: str, scale: float = 100, which=max) -> list[str]:
        """Mean ± std of ``key`` over seeds (times ``scale``), the best mean per column (``which``) in bold."""
        best = {}
        for col in self.columns:
            means = [_mean(g, key) for m in self.rows if (g := self.groups.get((m, *col)))]
            best[col] = which((x for x in means if not math.isnan(x)), default=None)

        def text(group: list[dict]) -> str:
            values = [x[key] for x in group if x.get(key) is not None]
            if not values:
                return ""
            cell = f"{_fmt(values, scale)} (n={len(values)})"
            col = (tuple(group[0]["hidden"]), group[0]["labels"])
            return f"**{cell}**" if math.isclose(statistics.fmean(values), best[col]) else cell

        return self.cells(title, text)


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

"""The comparison's report: the Markdown table of results.json's rows and the validation curves."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from .plots import save_curves

__all__ = ["summarize", "plot_curves"]


def _fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def summarize(runs: list[dict[str, Any]]) -> str:
    """The Markdown table: rows = models, columns = (architecture, label budget)."""
    columns = sorted(
        {(tuple(r["hidden"]), r["labels"]) for r in runs}, key=lambda c: (c[1] is None, c[1] or 0, len(c[0]), c[0])
    )
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
    lines = [
        "Test accuracy (%), mean ± std over seeds (n = seeds); best per column in bold.",
        "",
        "| model | " + " | ".join(header(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
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
    lines += [
        "",
        "Mean seconds per run: pretraining + fine-tuning. Pretraining never sees labels, so the label",
        "budgets of one (shape, seed) share one pretrained stack: its cost shows in the first budget run.",
        "",
        "| model | " + " | ".join(header(c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
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

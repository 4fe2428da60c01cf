"""The log-likelihood of one RBM of a stack on a data split, by AIS (and RAISE): a command.

    python -m dbn_init.experiments.evaluate WEIGHTS [--layer 1] [--dataset digits|mnist|fashion_mnist]
        [--root DIR] [--split test] [--chains 100] [--betas 10000] [--seed 0] [--binarize] [--raise-images 0]

The estimators are :mod:`dbn_init.ais`'s. Prints a few readable lines, then one JSON object.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Sequence

import torch
from jsonargparse import ArgumentParser, Namespace
from torch import Tensor

from ..ais import _check_bernoulli, ais_log_partition, base_rate_bias, mean_log_prob, raise_log_prob
from ..data import DigitsDataModule, FashionMNISTDataModule, ImageDataModule, MNISTDataModule, offline_hint
from ..entry import OneLineParser
from ..io import load_stack
from ..rbm import RBM

__all__ = ["main"]

DATASETS: dict[str, type[ImageDataModule]] = {
    "digits": DigitsDataModule,
    "mnist": MNISTDataModule,
    "fashion_mnist": FashionMNISTDataModule,
}


@torch.no_grad()
def _propagate(rbms: Sequence[RBM], x: Tensor, batch_size: int = 1000) -> Tensor:
    """Map images (N, D) to the visible layer of the RBM above ``rbms``: hidden probabilities, bottom up."""
    for rbm in rbms:
        x = torch.cat([rbm.hidden_probs(chunk) for chunk in x.split(batch_size)])
    return x


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no infinities


def _build_parser() -> ArgumentParser:
    parser = OneLineParser(
        prog="python -m dbn_init.experiments.evaluate",
        description="Estimate log Z of one RBM of a stack by AIS and report "
        "the average log-probability of a data split, in nats.",
    )
    parser.add_argument("weights", help="an RBM stack: dbn_init .safetensors, DBN Lightning .ckpt, or .npz")
    parser.add_argument("--layer", type=int, default=1, help="which RBM, 1-based from the bottom (default 1)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--root", default="data", help="folder of the MNIST/Fashion-MNIST IDX files")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test")
    parser.add_argument("--chains", type=int, default=100, help="AIS runs (default 100)")
    parser.add_argument("--betas", type=int, default=10000, help="AIS inverse temperatures (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds AIS, RAISE and the training subset")
    parser.add_argument(
        "--scaling",
        choices=["unit", "standardize"],
        default=None,
        help="pixel scaling the stack was trained on (default: the file's record; else "
        "standardize for Gaussian visible units, unit for Bernoulli)",
    )
    parser.add_argument(
        "--binarize",
        action="store_true",
        help="threshold pixels at 0.5, as for an RBM trained on binarised images (default: the file's record)",
    )
    parser.add_argument(
        "--raise-images",
        type=int,
        default=0,
        metavar="N",
        help="also estimate log p(v) of the first N images of the split by RAISE (Burda et al. 2015), "
        "a conservative estimate beside AIS's optimistic one; costs --betas Gibbs sweeps per image "
        "(default 0: off)",
    )
    return parser


def _run(args: Namespace) -> tuple[list[str], dict]:
    """Everything after parsing; user errors surface as ValueError/OSError/NotImplementedError."""
    dm_cls = DATASETS[args.dataset]
    n_pixels = dm_cls.image_shape[0] * dm_cls.image_shape[1]
    stack = load_stack(args.weights, input_size=n_pixels)
    rbms = stack.rbms
    if not 1 <= args.layer <= len(rbms):
        raise ValueError(f"expected --layer in 1..{len(rbms)} (the stack has {len(rbms)} RBMs), got {args.layer}")
    rbm, below = rbms[args.layer - 1], rbms[: args.layer - 1]
    _check_bernoulli(rbm, f"RBM {args.layer} of {args.weights}")
    scaling = args.scaling or stack.scaling
    args.binarize = args.binarize or stack.binarize  # as the stack was pretrained
    if rbms[0].visible_units == "bernoulli" and scaling != "unit":
        raise ValueError(
            f"RBM 1 of {args.weights} has Bernoulli visible units, which model pixels in [0, 1], but "
            f"--scaling is {scaling!r}; pass --scaling unit (or leave it out)"
        )
    if args.dataset == "digits":
        dm = dm_cls(scaling=scaling, binarize=args.binarize)
    else:
        dm = dm_cls(root=args.root, download=False, scaling=scaling, binarize=args.binarize)
    try:
        dm.setup("fit")
    except FileNotFoundError as err:  # the data module's fix names train.py's --data options
        problem = str(err).split("\nFix:")[0]
        raise FileNotFoundError(
            f"{problem}\nFix: pass --root DIR, a folder holding the four IDX files"
            f"{offline_hint(dm_cls.torchvision_name, '--root')}"
        ) from err
    data = {"train": dm.pretrain_x, "val": dm.val_x, "test": dm.test_x}[args.split]
    if len(data) == 0:
        raise ValueError(
            f"expected a non-empty {args.split} split of {args.dataset}, got 0 images; choose another --split"
        )
    gen = torch.Generator().manual_seed(args.seed)
    train = dm.pretrain_x[torch.randperm(len(dm.pretrain_x), generator=gen)[: len(data)]]
    data, train, pretrain = (_propagate(below, x) for x in (data, train, dm.pretrain_x))
    raise_data = _raise_images(args, data)  # checked before AIS runs

    base = base_rate_bias(pretrain)
    result = ais_log_partition(rbm, n_chains=args.chains, n_betas=args.betas, generator=gen, base_visible_bias=base)
    lp_split, lp_train = mean_log_prob(rbm, data, result.log_z), mean_log_prob(rbm, train, result.log_z)
    raise_lines, raise_summary = _raise_report(args, rbm, raise_data, base, gen, result.log_z)

    sizes = "-".join(str(n) for n in [rbms[0].n_visible, *(r.n_hidden for r in rbms)])
    lines = [
        f"{args.weights}: {len(rbms)} RBM(s), sizes {sizes}; RBM {args.layer} has {rbm.n_visible} visible "
        f"and {rbm.n_hidden} hidden units",
        f"AIS (Salakhutdinov & Murray 2008): {args.chains} chains, {args.betas} betas, seed {args.seed}, "
        "base-rate model from the training split",
    ]
    if below:
        lines.append(
            f"note: RBM {args.layer}'s visible layer is the hidden probabilities of RBMs 1..{args.layer - 1}, "
            "so the log-probabilities below are of those vectors under that RBM, not of the images"
        )
    elif bool(((data > 0) & (data < 1)).any()):
        lines.append(
            "note: the pixels are not binary, so -F(v) - log Z is not a normalised log-probability; "
            "pass --binarize for a model trained on binarised images"
        )
    lines += [
        f"log Z = {result.log_z:.4f} nats (3 standard errors: [{result.log_z_low:.4f}, {result.log_z_high:.4f}])",
        f"average log p(v) per image, {args.split} split ({len(data)} images): {lp_split:.4f} nats",
        f"average log p(v) per image, training subset ({len(train)} images): {lp_train:.4f} nats",
        *raise_lines,
    ]
    summary = {
        "weights": str(args.weights),
        "layer": args.layer,
        "dataset": args.dataset,
        "split": args.split,
        "binarize": args.binarize,
        "chains": args.chains,
        "betas": args.betas,
        "seed": args.seed,
        "log_z": result.log_z,
        "log_z_low": _finite(result.log_z_low),
        "log_z_high": result.log_z_high,
        "mean_log_prob": lp_split,
        "train_mean_log_prob": lp_train,
        "n_images": len(data),
        "visible": "images" if not below else f"hidden probabilities of RBM {args.layer - 1}",
        **raise_summary,
    }
    return lines, summary


def _raise_images(args: Namespace, data: Tensor) -> Tensor:
    """The first ``--raise-images`` rows of the split (all of them if it has fewer), checked binary."""
    if args.raise_images < 0:
        raise ValueError(f"expected --raise-images N >= 0 (0: no RAISE), got {args.raise_images}")
    subset = data[: args.raise_images]
    if len(subset) and not bool(((subset == 0) | (subset == 1)).all()):
        seen = "images" if args.layer == 1 else f"hidden probabilities of RBMs 1..{args.layer - 1}"
        raise ValueError(
            f"--raise-images needs binary visible vectors, but RBM {args.layer} sees {seen} with values strictly "
            "between 0 and 1; pass --binarize for RBM 1 of a binarised-image model, or leave out --raise-images"
        )
    return subset


def _raise_report(
    args: Namespace, rbm: RBM, data: Tensor, base: Tensor, gen: torch.Generator, log_z: float
) -> tuple[list[str], dict]:
    """RAISE on ``data`` (the :func:`_raise_images` rows), with AIS's ``-F(v) - log Z`` on the same rows."""
    if len(data) == 0:
        return [], {"raise_images": 0, "raise_mean_log_prob": None, "raise_ais_mean_log_prob": None}
    low = float(raise_log_prob(rbm, data, n_betas=args.betas, generator=gen, base_visible_bias=base).mean())
    high = mean_log_prob(rbm, data, log_z)
    lines = [
        f"RAISE (Burda et al. 2015): {args.betas} betas, one reverse chain per image, on the first {len(data)} "
        f"{args.split} images: average log p(v) {low:.4f} nats (conservative); AIS on the same images: {high:.4f}"
    ]
    return lines, {"raise_images": len(data), "raise_mean_log_prob": low, "raise_ais_mean_log_prob": high}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 on success, 2 on bad input).

    Prints a few readable lines, then one JSON object as the last line.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        lines, summary = _run(args)
    except (ValueError, OSError, NotImplementedError) as err:  # user errors: one line, no traceback
        message = " ".join(str(err).split())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

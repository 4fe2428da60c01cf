"""Does fine-tuning on inputs in [0, 1] kill the first layer's ReLUs, and does centring them help?

    python benchmarks/centring_probe.py textures                   # all labels, seeds 0 and 1
    python benchmarks/centring_probe.py rgb_patches --labels 10%

For each seed, the DBN's defaults (pretrained once), Xavier's start and He's are fine-tuned as
the defaults suite runs them (``Trainer(max_epochs=30)``), once as they are and once with the first
layer's inputs centred: ``W (x - mu) + b + W mu``, where ``mu`` is the mean of the pretraining
rows, so the network computes the same function at the start, while its weight gradients, which
are ``x`` times the unit's error, no longer all share one sign (LeCun, Bottou, Orr & Müller 1998,
"Efficient BackProp", section 4.3). Adam moves each weight by about its rate whatever the
gradient's size, so with 3,072 inputs near 0.5 one step moves a unit's pre-activation by
about 3,072 x 0.5 x 3e-3 = 4.6 (the DBN's rate) when the signs agree. Prints, per run, the share of
hidden units that are active on some training row after fine-tuning (per layer) and the
validation accuracy, then each start's mean validation accuracy as is and centred: the probe
reads validation only (the datasets are defaults_suite.py's).
"""

from __future__ import annotations

import argparse
import copy
import logging
import warnings

import torch
import torch.nn.functional as F
from defaults_suite import EVERY_DATASET, datamodule, tenth_of_labels
from lightning.pytorch import Trainer, seed_everything

from dbn_init import DBN, Baseline


class CentredLinear(torch.nn.Linear):
    """``nn.Linear`` applied to ``x - mu``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x - self.mu, self.weight, self.bias)


def centre(model, mu: torch.Tensor) -> None:
    """Swap the model's first layer for the centred one computing the same function."""
    old = model.mlp.features[0]
    new = CentredLinear(old.in_features, old.out_features)
    new.register_buffer("mu", mu.clone())
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.copy_(old.bias + old.weight @ mu)
    model.mlp.features[0] = new


def trainer(epochs: int) -> Trainer:
    return Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)  # fmt: skip


@torch.no_grad()
def live(model, x: torch.Tensor) -> list[float]:
    """Per hidden layer, the share of units active (> 0) on at least one row of ``x``."""
    shares, h = [], x
    for layer in model.mlp.features:
        h = layer(h)
        if isinstance(layer, torch.nn.ReLU):
            shares.append(round(float(((h > 0).any(0)).float().mean()), 3))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=list(EVERY_DATASET))
    parser.add_argument("--labels", choices=("all", "10%"), default="all")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    labels = tenth_of_labels(args.dataset) if args.labels == "10%" else None
    accuracies: dict[tuple[str, bool], list[float]] = {}
    for seed in range(args.seeds):
        seed_everything(seed, verbose=False)
        dm = datamodule(args.dataset, labels)
        dm.setup("fit")
        dbn = DBN(pretrain_seed=seed)
        trainer(0).fit(dbn, datamodule=dm)  # pretraining and transfer only
        starts = {"dbn": dbn}
        for init in ("xavier_uniform", "he_uniform"):
            seed_everything(seed, verbose=False)
            starts[init] = Baseline(init=init)
            starts[init].build(dm.pretrain_x.shape[1], int(dm.train_y.max()) + 1)
        for name, start in starts.items():
            for centred in (False, True):
                model = copy.deepcopy(start)
                if centred:
                    centre(model, dm.pretrain_x.mean(0))
                seed_everything(seed, verbose=False)
                trainer(30).fit(model, datamodule=dm)
                model.eval()
                with torch.no_grad():
                    val = float((model(dm.val_x).argmax(1) == dm.val_y).float().mean())
                print(f"{args.dataset} {args.labels} seed {seed} {name:15s} {'centred' if centred else 'as is':8s} "
                      f"live units {live(model, dm.pretrain_x)} val_acc {val:.3f}", flush=True)  # fmt: skip
                accuracies.setdefault((name, centred), []).append(val)
    for (name, centred), values in accuracies.items():
        print(f"mean val_acc {args.dataset} {args.labels} {name} {'centred' if centred else 'as is'}: "
              f"{100 * sum(values) / len(values):.2f} ({len(values)} seeds)")  # fmt: skip


if __name__ == "__main__":
    main()

"""Training-time monitoring shared by the pretraining stages and fine-tuning: epoch means that
cost one in-place add per step, and the divergence check."""

from __future__ import annotations

import os

import torch
from lightning.pytorch import Trainer
from torch import Tensor, nn
from torchmetrics import MeanMetric

__all__ = ["EpochMeans", "weights_diverged", "newest_checkpoint", "MONITOR_EVERY", "NON_FINITE_INPUTS"]

# Steps between the sampled checks (divergence, update ratio, the CD loss's value): each costs a
# host sync, which on a GPU stalls the step, and a sample every 50 steps is enough to see a trend.
MONITOR_EVERY = 50
# The cause a divergence message names besides the learning rate and the scaling.
NON_FINITE_INPUTS = "NaN/Inf inputs (dbn_init's DataModules refuse them, a loader of your own is not checked)"


class EpochMeans:
    """Per-sample sums of a few scalars over this rank's epoch, held in one device tensor.

    A step adds its batch sums with one in-place op (two torchmetrics updates per step cost
    about 1 ms on CPU, a sixth of a fine-tuning step); at the epoch's end the means feed
    ``MeanMetric``s, weighted by the sample count, which reduce across ranks when logged.
    """

    def __init__(self, n: int, device: torch.device) -> None:
        self.sums = torch.zeros(n, device=device)  # (n,)
        self.count = 0

    def add(self, *batch_sums: Tensor, count: int) -> None:
        """Add one batch: ``n`` scalar sums over its ``count`` samples."""
        self.sums += torch.stack([s.detach() for s in batch_sums])
        self.count += count

    def update(self, *metrics: MeanMetric) -> None:
        """Feed the epoch's per-sample means into ``metrics``, one per scalar, in order."""
        for metric, mean in zip(metrics, (self.sums / max(self.count, 1)).unbind()):
            metric.update(mean, weight=self.count)


def weights_diverged(module: nn.Module) -> bool:
    """Whether ``module``'s parameters hold a NaN/Inf.

    One fused reduction (a NaN/Inf anywhere makes the sum non-finite) and one host sync, which on
    a GPU stalls the step: callers check a sparse sample of steps and the epoch's last batch (so no
    checkpoint of the epoch holds a NaN). DDP keeps the weights identical on every rank, so every
    rank reaches the same verdict without a collective.
    """
    return not bool(torch.isfinite(sum(p.sum() for p in module.parameters())))


def newest_checkpoint(trainer: Trainer) -> str:
    """The newest checkpoint file this fit's checkpoint callbacks have written, or the one it
    resumed from (its last good state, for an error message), or ``"none saved yet"``."""
    written = [p for c in trainer.checkpoint_callbacks for p in (c.last_model_path, c.best_model_path)]
    paths = [p for p in (*written, trainer.ckpt_path) if p and os.path.isfile(p)]
    return max(paths, key=os.path.getmtime) if paths else "none saved yet"

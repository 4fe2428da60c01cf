"""The input transform of a data set: fitted on its training rows, applied to every split, and
recorded with a pretrained stack. One object, :class:`Scaling`, serves the in-memory and the
streaming DataModules and the stack file (:meth:`dbn_init.io.StackFile.scale`).

Model input = ``((raw - raw_low) / (raw_high - raw_low) - feature_mean) / feature_std``, each
statistic of shape (D,); ``"unit"`` also clips the unit-scaled values into [0, 1] (and thresholds
them at 0.5 when ``binarize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["SCALINGS", "STATS", "Scaling"]

SCALINGS = ("unit", "standardize", "none")
STATS = ("raw_low", "raw_high", "feature_mean", "feature_std")  # the fitted statistics, by name


@dataclass
class Scaling:
    """A fitted input transform: ``kind`` (one of :data:`SCALINGS`) and its statistics, (D,) each."""

    kind: str
    raw_low: Tensor
    raw_high: Tensor
    feature_mean: Tensor
    feature_std: Tensor
    binarize: bool = False

    @classmethod
    def fit(
        cls,
        kind: str,
        d: int,
        value_range: tuple[float, float] | None = None,
        extremes: Callable[[], tuple[Tensor, Tensor]] | None = None,
        unit_moments: Callable[[Scaling], tuple[Tensor, Tensor]] | None = None,
        binarize: bool = False,
    ) -> Scaling:
        """The transform of ``kind`` for ``d`` features (the laws: ``scaling`` in
        :class:`~dbn_init.data.InMemoryDataModule`), from summaries of the training rows: ``value_range``,
        the format's range where it has one (pixels 0..255), else ``extremes()``, each feature's raw
        minimum and maximum (None: no rows; a constant feature maps to 0); ``unit_moments(unit)``, the
        mean and std of the unit-scaled values, given the transform to unit scale. Each summary is asked
        for only where the kind needs it, so a stream gives them from one pass.
        """
        low, high = torch.zeros(d), torch.ones(d)
        if kind != "none" and value_range is not None:
            low, high = torch.full((d,), float(value_range[0])), torch.full((d,), float(value_range[1]))
        elif kind == "unit" and extremes is not None:
            low, high = extremes()
            high = torch.where(high > low, high, low + 1)
        scaling = cls(kind, low, high, torch.zeros(d), torch.ones(d), binarize)
        if kind == "standardize":
            mean, std = unit_moments(scaling)
            if value_range is not None:
                std = std.clamp_min(0.05)
            else:  # any range: only a constant feature (std at float32 noise) is left unscaled
                std = torch.where(std > 1e-6 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
            scaling.feature_mean, scaling.feature_std = mean, std
        return scaling

    def unit(self, raw: Tensor) -> Tensor:
        """``(raw - raw_low) / (raw_high - raw_low)``: (N, D) -> (N, D), skipping what is the identity."""
        x = raw if not self.raw_low.any() else raw - self.raw_low
        span = self.raw_high - self.raw_low
        return x if bool((span == 1).all()) else x / span

    def __call__(self, raw: Tensor | np.ndarray) -> Tensor:
        """Rows as stored (N, D) -> model inputs (N, D) float32."""
        x = self.unit(torch.as_tensor(raw, dtype=torch.float32))
        if self.kind == "unit":
            x = x.clamp(0.0, 1.0)  # rows outside the training rows' range (a no-op for pixels)
            if self.binarize:
                x = (x > 0.5).float()
        elif self.kind == "standardize":
            x = (x - self.feature_mean) / self.feature_std
        return x

    def stats(self) -> dict[str, Tensor]:
        """The statistics by name (:data:`STATS`), as a stack file records them."""
        return {name: getattr(self, name) for name in STATS}

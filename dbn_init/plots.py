"""Pictures: filter grids, learning curves. Pure functions of arrays -> PNG files (matplotlib Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["image_grid", "save_image_grid", "save_curves"]


def image_grid(images: torch.Tensor | np.ndarray, image_shape: Sequence[int], ncols: int | None = None,
               normalize_each: bool = True, pad: int = 1) -> np.ndarray:
    """Tile flat images into one grayscale picture.

    Parameters
    ----------
    images : array of shape (n, H * W)
        E.g. an RBM's ``weight`` (n_hidden, n_visible): row j is hidden unit j's filter.
    normalize_each : bool
        Scale each tile to [0, 1] on its own (filters have arbitrary scale); otherwise clip the
        whole grid to [0, 1] (pixels, reconstructions, samples).

    Returns
    -------
    ndarray of shape (rows * (H + pad) + pad, ncols * (W + pad) + pad), values in [0, 1].
    """
    x = torch.as_tensor(images).detach().float().cpu().numpy()
    h, w = image_shape
    if x.ndim != 2 or x.shape[1] != h * w or len(x) == 0:
        raise ValueError(f"expected images of shape (n, {h * w}), n >= 1, for image_shape {tuple(image_shape)}, "
                         f"got {x.shape}")
    n = x.shape[0]
    if normalize_each:
        lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
        x = (x - lo) / np.maximum(hi - lo, 1e-12)
    else:
        x = np.clip(x, 0.0, 1.0)
    ncols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncols)
    grid = np.ones((rows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i].reshape(h, w)
    return grid


def save_image_grid(grid: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Write a grid from :func:`image_grid` as a PNG (scaled up so small digits stay visible)."""
    path = Path(path)
    scale = max(2, 640 // max(grid.shape))
    fig = plt.figure(figsize=(grid.shape[1] * scale / 100 + 0.2, grid.shape[0] * scale / 100 + (0.5 if title else 0.2)), dpi=100)
    plt.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    plt.axis("off")
    if title:
        plt.title(title, fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def save_curves(panels: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path,
                ylabel: str = "validation accuracy", xlabel: str = "epoch") -> Path:
    """One panel per key of ``panels``; in each, one line per label: ``{panel: {label: ys}}``."""
    path = Path(path)
    n = max(len(panels), 1)
    cols = min(n, 3)  # wrap into rows of three, so six panels stay readable
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, ys in sorted(lines.items()):
            ax.plot(range(1, len(ys) + 1), ys, label=label, marker="o", markersize=2)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

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
from torchvision.utils import make_grid  # noqa: E402

from .io import replacing  # noqa: E402

__all__ = ["image_grid", "save_image_grid", "save_curves"]


def drawable(image_shape: Sequence[int]) -> bool:
    """Whether images of ``image_shape`` can be drawn: grey (H, W) or (1, H, W), or colour (3, H, W)."""
    return len(image_shape) == 2 or (len(image_shape) == 3 and image_shape[0] in (1, 3))


def image_grid(
    images: torch.Tensor | np.ndarray,
    image_shape: Sequence[int],
    ncols: int | None = None,
    normalize_each: bool = True,
    pad: int = 1,
) -> np.ndarray:
    """Tile flat images into one picture: grayscale for ``(H, W)``, RGB for ``(3, H, W)``.

    Parameters
    ----------
    images : array of shape (n, H * W) or (n, C * H * W)
        E.g. an RBM's ``weight`` (n_hidden, n_visible): row j is hidden unit j's filter. Colour
        rows are channel-first, as torch lays out ``(C, H, W)`` images (``x.flatten(1)``).
    image_shape : (H, W), (1, H, W) or (3, H, W)
    normalize_each : bool
        Scale each tile to [0, 1] on its own, over all its channels (filters have arbitrary
        scale); otherwise clip the whole grid to [0, 1] (pixels, reconstructions, samples).

    Returns
    -------
    ndarray of shape (rows * (H + pad) + pad, cols * (W + pad) + pad) for grey, with a last axis
    of 3 for colour (matplotlib's layout), values in [0, 1]; padding is white (``cols``: ``ncols``,
    at most n; torchvision's ``make_grid`` tiles them).
    """
    x = torch.as_tensor(images).detach().float().cpu().numpy()
    if not drawable(image_shape):
        raise ValueError(f"expected image_shape (H, W), (1, H, W) or (3, H, W), got {tuple(image_shape)}")
    shape = tuple(image_shape)[1:] if len(image_shape) == 3 and image_shape[0] == 1 else tuple(image_shape)
    size = math.prod(shape)
    if x.ndim != 2 or x.shape[1] != size or len(x) == 0:
        raise ValueError(
            f"expected images of shape (n, {size}), n >= 1, for image_shape {tuple(image_shape)}, got {x.shape}"
        )
    n = x.shape[0]
    if normalize_each:
        lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
        x = (x - lo) / np.maximum(hi - lo, 1e-12)
    else:
        x = np.clip(x, 0.0, 1.0)
    tiles = torch.from_numpy(x.reshape(n, -1, *shape[-2:]))  # (n, C, H, W), C = 1 for grey
    if n > 1:
        grid = make_grid(tiles, nrow=ncols or math.ceil(math.sqrt(n)), padding=pad, pad_value=1.0)  # (3, H', W')
    else:  # make_grid returns one image as it is, unpadded
        grid = torch.nn.functional.pad(tiles[0], (pad,) * 4, value=1.0)
    return (grid[0] if len(shape) == 2 else grid.permute(1, 2, 0)).numpy()


def save_image_grid(grid: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Write a grid from :func:`image_grid` as a PNG (scaled up so small digits stay visible)."""
    path = Path(path)
    scale = max(2, 640 // max(grid.shape[:2]))
    height, width = grid.shape[0] * scale / 100, grid.shape[1] * scale / 100
    fig = plt.figure(figsize=(width + 0.2, height + (0.5 if title else 0.2)), dpi=100)
    plt.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    plt.axis("off")
    if title:
        plt.title(title, fontsize=9)
    _save(fig, path, bbox_inches="tight")
    return path


def save_curves(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    ylabel: str = "validation accuracy",
    xlabel: str = "epoch",
) -> Path:
    """One panel per key of ``panels``; in each, one line per label: ``{panel: {label: ys}}``."""
    path = Path(path)
    cols = min(max(len(panels), 1), 3)  # wrap into rows of three, so six panels stay readable
    rows = max(math.ceil(len(panels) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
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
    _save(fig, path, dpi=110)
    return path


def _save(fig, path: Path, **options) -> None:
    """``fig`` as a PNG at ``path``, through a temporary file beside it (:func:`dbn_init.io.replacing`):
    a full disk or a kill never leaves a truncated picture."""
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png", **options)
    finally:
        plt.close(fig)

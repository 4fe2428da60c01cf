"""Write an ImageFolder of real RGB images that needs no download: patches of scikit-learn's two sample photos.

    python -m dbn_init.experiments.make_image_folder data/patches [--size 32]

``DIR/china/*.png`` and ``DIR/flower/*.png``: every non-overlapping ``size`` x ``size`` patch of
``sklearn.datasets.load_sample_images()`` (two 427 x 640 photos), in row-major order, so the same
command always writes the same files (260 patches per class at size 32). The two classes are the
photo each patch comes from, a task easy enough for a few epochs on a CPU; it is the demo of
:class:`dbn_init.data.DatasetDataModule` over ``torchvision.datasets.ImageFolder``
(configs/image_folder_dbn.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser
from PIL import Image
from sklearn.datasets import load_sample_images

from ..constraints import FileTakenError, UsageError

__all__ = ["write_image_folder", "main"]


def patches(image: np.ndarray, size: int) -> list[np.ndarray]:
    """The non-overlapping ``(size, size, 3)`` patches of an ``(H, W, 3)`` image, row by row."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    return [image[r * size : (r + 1) * size, c * size : (c + 1) * size] for r in range(rows) for c in range(cols)]


def write_image_folder(root: str | Path, size: int = 32) -> dict[str, int]:
    """Write the patches as ``root/<photo>/<index>.png``; returns the number written per class.

    Raises:
        FileExistsError: ``root`` exists and is not an empty folder (nothing is overwritten).
        ValueError: ``size`` is not between 1 and 427 (the photos' height).
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileTakenError(
            f"{root} exists and is not an empty folder; expected a new or empty folder to write "
            "the ImageFolder into: pass another DIR, or delete this one first"
        )
    photos = load_sample_images()
    if not 1 <= size <= min(image.shape[0] for image in photos.images):
        raise UsageError(f"expected --size between 1 and 427 (the photos' height), got {size}")
    counts = {}
    for filename, image in zip(photos.filenames, photos.images):
        name = Path(filename).stem  # "china", "flower"
        (root / name).mkdir(parents=True)
        tiles = patches(image, size)
        for i, tile in enumerate(tiles):
            Image.fromarray(tile).save(root / name / f"{i:05d}.png")
        counts[name] = len(tiles)
    return counts


def main(argv: list[str] | None = None) -> None:
    prog, description = "python -m dbn_init.experiments.make_image_folder", __doc__.split("\n\n")[0]
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("dir", help="the folder to create (must not exist, or be empty)")
    parser.add_argument("--size", type=int, default=32, help="patch side in pixels (default 32)")
    args = parser.parse_args(argv)
    try:
        counts = write_image_folder(args.dir, args.size)
    except UsageError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"wrote {', '.join(f'{n} {name}' for name, n in counts.items())} PNG patches of {args.size}x{args.size} "
        f"into {args.dir}"
    )


if __name__ == "__main__":
    main()

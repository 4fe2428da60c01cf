"""Export the RBM stack of a DBN's Lightning checkpoint as a dbn_init safetensors file.

Usage::

    python -m dbn_init.export CKPT OUT.safetensors [--overwrite]

The checkpoint is read with ``torch.load(..., weights_only=True)`` (no code from it runs) and
validated by :func:`dbn_init.io.load_stack`. The file records ``scaling`` from the checkpoint's
DataModule hyper-parameters (``datamodule_hyper_parameters["scaling"]``), else what the first
RBM's visible units want ("standardize" for Gaussian, "unit" for Bernoulli).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from .io import load_stack, save_stack

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; returns the exit code (0 on success, 2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m dbn_init.export", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="Lightning checkpoint (.ckpt) of a dbn_init DBN")
    parser.add_argument("out", help="output file, e.g. rbms.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if out.exists() and Path(args.ckpt).exists() and os.path.samefile(out, args.ckpt):
            raise ValueError(f"OUT {out} is the checkpoint being exported; write the stack to another file")
        if out.suffix != ".safetensors":
            raise ValueError(
                f"expected OUT with a .safetensors name (the format written), e.g. "
                f"{out.with_suffix('.safetensors')}, got {out}"
            )
        stack = load_stack(args.ckpt)
        provenance = {k: v for k, v in stack.metadata.items() if k in ("source", "stage", "stage_epochs_done")}
        save_stack(stack.rbms, args.out, scaling=stack.scaling, binarize=stack.metadata.get("binarize") == "true",
                   stats=stack.stats, image_shape=stack.image_shape, overwrite=args.overwrite,
                   extra_metadata=provenance)  # fmt: skip
        sizes = "-".join(map(str, [stack.rbms[0].n_visible, *(r.n_hidden for r in stack.rbms)]))
        recorded = ", ".join(sorted(stack.stats)) or "no statistics (the checkpoint holds none)"
        print(f"wrote {out}: {len(stack.rbms)} RBM(s) {sizes}, scaling {stack.scaling}, transform {recorded}")
    except (ValueError, OSError) as err:  # user errors: the message is the whole story, no traceback
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export the RBM stack of a DBN's Lightning checkpoint as a dbn_init safetensors file.

Usage::

    python -m dbn_init.export CKPT OUT.safetensors [--overwrite]

The checkpoint is read with ``torch.load(..., weights_only=True)`` (no code from it runs) and
validated by :func:`dbn_init.io.load_stack`. The file records ``scaling`` from the checkpoint's
DataModule hyper-parameters (``datamodule_hyper_parameters["scaling"]``), else what the first
RBM's visible units want ("standardize" for Gaussian, "unit" for Bernoulli).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from jsonargparse import ActionYesNo, ArgumentParser

from .constraints import UsageError
from .entry import command
from .io import load_stack, save_stack

__all__ = ["main", "export"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; returns the exit code (0 on success, 2 on bad input, 128 + N on signal N)."""
    parser = ArgumentParser(prog="python -m dbn_init.export", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="Lightning checkpoint (.ckpt) of a dbn_init DBN")
    parser.add_argument("out", help="output file, e.g. rbms.safetensors")
    parser.add_argument("--overwrite", action=ActionYesNo, default=False, help="replace OUT if it already exists")
    args = parser.parse_args(argv)
    try:  # a usage error or a signal ends it as entry.command ends train.py, here as a return code
        command(lambda: export(Path(args.ckpt), Path(args.out), args.overwrite),
                "run the same command again (OUT was not written)", prog=f"{parser.prog}: error")  # fmt: skip
    except SystemExit as stop:
        return stop.code
    return 0


def export(ckpt: Path, out: Path, overwrite: bool = False) -> None:
    """Write the RBM stack of checkpoint ``ckpt`` to ``out`` (a temporary file beside it, renamed when
    whole: an interrupted export leaves neither a partial ``out`` nor a temporary file)."""
    if out.exists() and ckpt.exists() and out.samefile(ckpt):
        raise UsageError(f"OUT {out} is the checkpoint being exported; write the stack to another file")
    stack = load_stack(ckpt)
    provenance = {k: v for k, v in stack.metadata.items() if k in ("source", "stage", "stage_epochs_done")}
    save_stack(stack.rbms, out, scaling=stack.scaling, binarize=stack.binarize,
               stats=stack.stats, image_shape=stack.image_shape, overwrite=overwrite,
               extra_metadata=provenance)  # fmt: skip
    sizes = "-".join(map(str, [stack.rbms[0].n_visible, *(r.n_hidden for r in stack.rbms)]))
    recorded = ", ".join(sorted(stack.stats)) or "no statistics (the checkpoint holds none)"
    print(f"wrote {out}: {len(stack.rbms)} RBM(s) {sizes}, scaling {stack.scaling}, transform {recorded}")


if __name__ == "__main__":
    sys.exit(main())

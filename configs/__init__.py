"""The YAML experiments shipped with dbn_init, installed as ``dbn_init.configs``, and how the
commands find them: ``dbn-init fit --config quickstart.yaml`` works from any folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["shipped"]


def shipped(args: list[str]) -> list[str]:
    """``args`` with each ``--config NAME`` that names no file here replaced by the shipped config
    of that name, where there is one."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--config" and not Path(out[i + 1]).exists():
            candidate = resources.files(__name__) / Path(out[i + 1]).name
            if candidate.is_file():
                out[i + 1] = str(candidate)
    return out

"""The YAML experiments shipped with dbn_init, installed as ``dbn_init.configs``, and how the
commands find them: ``dbn-init fit --config quickstart.yaml`` works from any folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["shipped"]


def shipped(args: list[str]) -> list[str]:
    """``args`` with each ``--config NAME`` that names no file here replaced by the shipped config
    of that name, where there is one."""
    out = []
    for i, arg in enumerate(args):
        flag, eq, name = arg.partition("=")
        if eq and flag == "--config":  # --config=NAME
            out.append(f"--config={_found(name)}")
        elif i and args[i - 1] in ("--config", "-c"):
            out.append(_found(arg))
        else:
            out.append(arg)
    return out


def _found(name: str) -> str:
    """``name`` itself where it names a file here, else the shipped config of that name if there is one."""
    candidate = resources.files(__name__) / Path(name).name
    return str(candidate) if not Path(name).exists() and candidate.is_file() else name

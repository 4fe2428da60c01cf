"""The YAML experiments shipped with dbn_init, installed as ``dbn_init.configs``, and how the
commands find them: ``dbn-init fit --config quickstart.yaml`` works from any folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["shipped", "names"]


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


def names() -> list[str]:
    """The file names of the shipped configs."""
    return sorted(f.name for f in resources.files(__name__).iterdir() if f.name.endswith(".yaml"))


def _found(name: str) -> str:
    """``name`` itself where it names a file here, else the shipped config of that name (``.yaml`` may
    be left out) if there is one."""
    if Path(name).exists():
        return name
    for candidate in (Path(name).name, f"{Path(name).name}.yaml"):
        if (shipped_file := resources.files(__name__) / candidate).is_file():
            return str(shipped_file)
    return name

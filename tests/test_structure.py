"""The package's shape, kept true by tests: no import cycle, and a reference that names every public name."""

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import dbn_init

PACKAGE = Path(dbn_init.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Each dbn_init module -> the dbn_init modules it imports, at the top or inside a function
    (``if TYPE_CHECKING:`` imports left out: they never run)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        type_only = {
            id(node)
            for branch in ast.walk(tree)
            if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
            for node in ast.walk(branch)
        }
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and id(node) not in type_only:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                targets |= {module} if node.module else {f"{module}.{alias.name}" for alias in node.names}
        # a package's own submodules import through it; that is no cycle
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def test_no_module_of_the_package_imports_itself_back_through_others():
    graph = _imports()
    assert graph["dbn_init.pretrain"] and graph["dbn_init.models"]  # the walk sees imports

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()]:
                if target == goal:
                    return True
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return False

    cycles = sorted(name for name in graph if reaches(name, name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_python_api_page_names_every_name_of_every_modules_all():
    page = (PACKAGE.parent / "docs" / "python-api.md").read_text()
    missing = []
    for module in pkgutil.walk_packages(dbn_init.__path__, "dbn_init."):
        for name in getattr(importlib.import_module(module.name), "__all__", ()):
            if not re.search(rf"(?<![\w.]){re.escape(name)}\b", page):
                missing.append(f"{module.name}.{name}")
    assert not missing, f"docs/python-api.md does not name {missing}"


def test_every_command_parses_with_jsonargparse_and_no_module_speaks_a_flag_outside_the_command_layer():
    """One parser for every command, and ``--model.``/``--data.``/``--trainer.`` advice only where commands
    are parsed (cli.py, entry.py) or run (the experiments subpackage)."""
    argparse_users, flag_speakers = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text, name = path.read_text(), str(path.relative_to(PACKAGE))
        nodes = list(ast.walk(ast.parse(text)))
        imported = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
        if "argparse" in imported:
            argparse_users.append(name)
        if (
            name not in ("cli.py", "entry.py")
            and not name.startswith("experiments")
            and re.search(r"--(model|data|trainer)\.", text)
        ):
            flag_speakers.append(name)
    assert "jsonargparse" in (PACKAGE / "export.py").read_text()  # the walk reads the commands
    assert not argparse_users, f"modules parsing with argparse: {argparse_users}"
    assert not flag_speakers, f"modules naming command-line flags: {flag_speakers}"

"""featlab's layers import only downwards (ARCHITECTURE.md): read every module's imports with ``ast``.

entry points (train, eval, __main__) -> tasks, tools, cli, commands -> callbacks, losses, nets, metrics ->
backbones, data -> config, errors, files, checkpoints, optim, overrides, loggers, visualize, interface.
A lower layer that needs something from a higher one means that thing belongs lower.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import featlab

PACKAGE = Path(featlab.__file__).resolve().parent

# Top-level name under featlab -> layer, bottom (0) to top. A module may import its own layer or below.
LAYERS = {
    "errors": 0, "config": 0, "files": 0, "checkpoints": 0, "runs": 0, "optim": 0, "overrides": 0, "loggers": 0, "runlog": 0, "extras": 0,
    "visualize": 0, "interface": 0, "__init__": 0,
    "backbones": 1, "data": 1,
    "callbacks": 2, "losses": 2, "nets": 2, "metrics": 2,
    "tasks": 3, "tools": 3, "cli": 3, "commands": 3,
    "train": 4, "eval": 4, "__main__": 4,
}
# Checked by name as well, so a reshuffled table cannot hide them: the building blocks never reach
# for tasks or front doors, and a task never reaches for the command line or a tool.
FORBIDDEN = {
    **{low: {"tasks", "tools", "cli", "train", "eval"} for low in
       ("data", "losses", "nets", "backbones", "metrics", "callbacks")},
    "tasks": {"tools", "cli", "train", "eval"},
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def area(path: Path) -> str:
    """The top-level featlab name a file belongs to (``tasks`` for tasks/dino.py, ``cli`` for cli.py)."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def package_of(path: Path) -> str:
    return ".".join(("featlab", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]))


def featlab_imports(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, top-level featlab name)`` of every import in ``source``, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            if names == ["featlab"]:  # from featlab import tasks
                names = [f"featlab.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "featlab" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_every_module_has_a_layer():
    missing = sorted({area(p) for p in modules()} - set(LAYERS))
    assert not missing, f"give {missing} a layer in LAYERS (and in ARCHITECTURE.md)"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    here = area(path)
    upward = [f"{path.relative_to(PACKAGE)}:{line} imports featlab.{target}"
              for line, target in featlab_imports(path.read_text(), package_of(path))
              if LAYERS.get(target, 0) > LAYERS[here] or target in FORBIDDEN.get(here, ())]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_check_sees_every_form_of_import():
    """Module level, inside a function, relative, and ``from featlab import x``."""
    source = ("from featlab.tasks.base import FeatlabTask\n"
              "def f():\n    import featlab.cli\n"
              "from ..tools import bench\n"
              "from . import images\n"
              "from featlab import train\n")
    targets = sorted(t for _, t in featlab_imports(source, "featlab.data"))
    assert targets == ["cli", "data", "tasks", "tools", "train"]

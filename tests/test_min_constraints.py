"""The minimum-versions CI job pins what pyproject.toml declares: each floor, torch left free."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="the CI script reads pyproject.toml with Python >= 3.11's tomllib")

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("min_constraints", REPO / ".ci" / "min_constraints.py")
min_constraints = importlib.util.module_from_spec(spec)
spec.loader.exec_module(min_constraints)


def write(tmp_path: Path, dependencies: list[str], optional: dict[str, list[str]]) -> Path:
    lines = ["[project]", 'name = "featlab"', f"dependencies = {dependencies!r}".replace("'", '"'),
             "[project.optional-dependencies]"]
    lines += [f"{name} = {reqs!r}".replace("'", '"') for name, reqs in optional.items()]
    path = tmp_path / "pyproject.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_floors_become_pins_following_featlabs_own_extras(tmp_path):
    path = write(tmp_path, ["torch>=2.4", "Pillow>=10", "timm >= 1.0.21  ", "sqlalchemy>=1.4,<2"],
                 {"test": ["pytest>=8"], "dev": ["featlab[test]", "ruff>=0.6"], "render3d": ["pybullet>=3.2"]})
    assert min_constraints.constraints(path, ["dev"]) == [
        "pillow==10", "pytest==8", "ruff==0.6", "sqlalchemy==1.4", "timm==1.0.21"]
    assert min_constraints.constraints(path, []) == ["pillow==10", "sqlalchemy==1.4", "timm==1.0.21"]


@pytest.mark.parametrize(("dependencies", "extras", "message"), [
    (["numpy"], [], "declares no '>=' floor"),
    (["numpy<2"], [], "declares no '>=' floor"),
    (["numpy>=1.24"], ["nope"], "has no extra 'nope'; it has: test"),
    (["numpy>=1.24"], ["test"], "numpy has two floors"),
])
def test_a_dependency_without_one_floor_or_an_unknown_extra_is_refused(tmp_path, dependencies, extras, message):
    path = write(tmp_path, dependencies, {"test": ["numpy>=1.26"]})
    with pytest.raises(SystemExit, match=message):
        min_constraints.constraints(path, extras)


def test_every_declared_dependency_of_featlab_is_pinned_except_torch():
    """The real pyproject: every requirement of the core and the job's extras appears with its floor."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = dict(line.split("==") for line in min_constraints.constraints(REPO / "pyproject.toml", ["dev"]))
    assert "torch" not in pins and "torchvision" not in pins
    for requirement in min_constraints.requirements(project, ["dev"]):
        name, _, floor = min_constraints.floor_of(requirement)
        if min_constraints.normalized(name) not in min_constraints.UNPINNED:
            assert pins[min_constraints.normalized(name)] == floor, requirement

"""Write a pip constraints file that pins featlab's dependencies to their declared floors.

    python .ci/min_constraints.py [EXTRA ...] > min-constraints.txt

A floor in pyproject.toml (``timm>=1.0.9``) is a promise that the oldest allowed release works. The
minimum-versions job in ``.ci/run`` keeps that promise honest: it installs featlab with this file
(``pip install -c min-constraints.txt -e '.[test]'``), so every declared dependency of the core and
of the named extras is at exactly its floor (``timm==1.0.9``), and runs a smoke subset of the tests.
Packages featlab does not name stay free (pip picks their newest compatible release).

torch and torchvision are left out of the pins: CI's machine holds one torch build (2.14.1,
torchvision 0.29.1) on its disk and no other can be installed there in CI's time, so their declared
floors are that release line (``torch>=2.14``) and the job runs exactly it. Every other dependency must declare a ``>=`` floor: one without is an error,
because an unpinned dependency would make the job test the newest release and prove nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib  # Python >= 3.11, as on CI

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# One build of each on CI's disk; see the module docstring.
UNPINNED = {"torch", "torchvision"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*)")


def normalized(name: str) -> str:
    """PEP 503 name, so ``Pillow`` and ``pillow`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def floor_of(requirement: str) -> tuple[str, list[str], str | None]:
    """(name, extras, the version after ``>=`` or None) of one requirement string."""
    match = REQUIREMENT.match(requirement)
    if not match:
        raise SystemExit(f"pyproject.toml: cannot read the requirement {requirement!r}")
    name, extras, specs = match.groups()
    floors = [spec.strip()[2:].strip() for spec in specs.split(",") if spec.strip().startswith(">=")]
    return name, [e.strip() for e in (extras or "").split(",") if e.strip()], floors[0] if floors else None


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The core dependencies and those of ``extras``, following featlab's own extras
    (``featlab[test,export]`` inside ``dev``)."""
    optional = project.get("optional-dependencies", {})
    found, todo, seen = list(project.get("dependencies", [])), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}; it has: {', '.join(sorted(optional))}")
        seen.add(extra)
        for requirement in optional[extra]:
            name, inner, _ = floor_of(requirement)
            if normalized(name) == normalized(project["name"]):
                todo.extend(inner)
            else:
                found.append(requirement)
    return found


def constraints(pyproject: Path, extras: list[str]) -> list[str]:
    """``name==floor`` lines, one per declared dependency, sorted; torch and torchvision left out."""
    project = tomllib.loads(pyproject.read_text())["project"]
    pins: dict[str, str] = {}
    for requirement in requirements(project, extras):
        name, _, floor = floor_of(requirement)
        key = normalized(name)
        if key in UNPINNED:
            continue
        if floor is None:
            raise SystemExit(f"pyproject.toml: {requirement!r} declares no '>=' floor; give it one")
        if pins.get(key, floor) != floor:
            raise SystemExit(f"pyproject.toml: {name} has two floors ({pins[key]} and {floor}); keep one")
        pins[key] = floor
    return [f"{name}=={floor}" for name, floor in sorted(pins.items())]


def main(argv: list[str]) -> int:
    print("# featlab's declared floors (.ci/min_constraints.py); torch and torchvision not pinned")
    print("\n".join(constraints(PYPROJECT, argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

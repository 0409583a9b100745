"""Reading a study's run directories: one record per run, failed and never-finished jobs included.

A sweep's grid (``multirun.yaml``) is compared with the job folders, so a job that never wrote
``results.json`` becomes a ``missing`` record instead of silently shortening the study.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featlab.errors import ConfigError
from featlab.loggers import MULTIRUN_FILE, override_items, override_key, read_launch, short_names, swept_keys

RESULTS_FILE = "results.json"
HISTORY_FILES = ("csv/metrics.csv", "metrics.csv")
TRAIN_LOSS_COLUMNS = ("train/loss_step", "train/loss", "train/loss_epoch")
MAX_EXTRA_COLUMNS = 6
HYDRA_JOB_DIR = re.compile(r"^(\d+)_.*$")  # <job num>_<override dirname>
FAILED_STATES = ("failed", "missing", "interrupted", "running")


@dataclass
class RunRecord:
    """One row of the report: a finished, failed, or missing run."""

    label: str
    path: Path | None
    status: str
    overrides: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    global_step: int | None = None
    wall_time_s: float | None = None
    git_commit: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status not in FAILED_STATES


@dataclass
class Launch:
    """A Hydra multirun folder: what it swept and how it was started."""

    path: Path
    params: dict[str, Any]
    overrides: list[str]

    @property
    def keys(self) -> list[str]:
        return swept_keys(self.params, self.overrides)


# -- reading runs ---------------------------------------------------------------------------------
def as_number(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric and non-finite values (``"nan"`` strings too)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _job_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path)) or []]


def load_run(run_dir: Path) -> RunRecord:
    """A run from its folder; no (or an unreadable) ``results.json`` makes it a missing/failed row."""
    path = run_dir / RESULTS_FILE
    overrides = _job_overrides(run_dir)
    if not path.is_file():
        return RunRecord(run_dir.name, run_dir, "missing", override_items(overrides),
                         error="no results.json: the job died before writing it or never ran")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return RunRecord(run_dir.name, run_dir, "failed", override_items(overrides),
                         error=f"unreadable results.json ({type(err).__name__})")
    config = data.get("config") or {}
    recorded = config.get("overrides")
    return RunRecord(
        label=run_dir.name,
        path=run_dir,
        status=str(data.get("status") or "missing"),
        overrides=override_items(recorded if recorded is not None else overrides),
        metrics=dict(data.get("metrics") or {}),
        speed=dict(data.get("speed") or {}),
        error=data.get("error"),
        global_step=data.get("global_step"),
        wall_time_s=data.get("wall_time_s"),
        git_commit=data.get("git_commit"),
        config=config,
    )


def _is_run_dir(path: Path) -> bool:
    return (path / RESULTS_FILE).is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def find_runs(paths: Sequence[str | Path]) -> tuple[list[RunRecord], list[Launch]]:
    """Runs under each path: a run dir, a multirun dir (its job folders), or any folder above them."""
    run_dirs: dict[Path, None] = {}
    launches: list[Launch] = []
    for given in paths:
        path = Path(given)
        if path.is_file() and path.name == RESULTS_FILE:
            path = path.parent
        if not path.is_dir():
            raise ConfigError("runs", f"'{given}' is not a run directory, a multirun directory or a results.json")
        for sweep_file in sorted(path.rglob(MULTIRUN_FILE)):
            params, overrides = read_launch(sweep_file.parent)
            launches.append(Launch(sweep_file.parent, params, overrides))
        if _is_run_dir(path):
            run_dirs.setdefault(path, None)
        candidates = {p.parent for p in path.rglob(RESULTS_FILE)}
        candidates |= {p.parent.parent for p in path.rglob(".hydra/overrides.yaml")}
        for candidate in sorted(candidates):
            if _is_run_dir(candidate) and not (candidate / MULTIRUN_FILE).is_file():
                run_dirs.setdefault(candidate, None)
    if not run_dirs and not launches:
        raise ConfigError("runs", f"no results.json under {', '.join(map(str, paths))}; give run or multirun dirs")
    runs = [load_run(d) for d in run_dirs]
    _relabel(runs)
    return runs, launches


def _relabel(runs: list[RunRecord]) -> None:
    """Short row labels: the path below the runs' common folder, Hydra's ``N_override,dirname`` as ``N``."""
    paths = [r.path for r in runs if r.path is not None]
    if not paths:
        return
    common = Path(os.path.commonpath([str(p) for p in paths]))
    if len(paths) == 1:
        common = paths[0].parent
    for run in runs:
        if run.path is None:
            continue
        parts = [HYDRA_JOB_DIR.sub(r"\1", part) for part in run.path.relative_to(common).parts]
        run.label = "/".join(parts)


def expected_grid(launch: Launch) -> list[dict[str, str]]:
    """The swept-value combinations a basic-sweeper launch asked for ([] for optimisers like Optuna)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    definitions = {str(k): f"{k}={v}" for k, v in launch.params.items()}
    for override in launch.overrides:
        if "=" in override:
            definitions[override_key(override)] = override
    parser = OverridesParser.create()
    axes: list[list[tuple[str, str]]] = []
    for key in launch.keys:
        try:
            parsed = parser.parse_override(definitions[key])
        except Exception:
            return []
        if not parsed.is_discrete_sweep():
            return []
        axes.append([(key, str(value)) for value in parsed.sweep_string_iterator()])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def add_missing_jobs(runs: list[RunRecord], launches: Sequence[Launch]) -> list[RunRecord]:
    """Rows for grid points of a launch that left no job folder (the sweep was stopped early)."""
    missing: list[RunRecord] = []
    for launch in launches:
        keys = launch.keys
        found = {tuple(r.overrides.get(k) for k in keys) for r in runs if r.path and launch.path in r.path.parents}
        for combo in expected_grid(launch):
            if tuple(combo[k] for k in keys) not in found:
                missing.append(RunRecord("(not run)", None, "missing", dict(combo),
                                         error="in the sweep's grid but no job folder was written"))
    return runs + missing


def study_keys(runs: Sequence[RunRecord], launches: Sequence[Launch]) -> list[str]:
    """Swept keys: those the launches swept, then any other override whose value differs between runs."""
    keys: dict[str, None] = {}
    for launch in launches:
        keys.update(dict.fromkeys(launch.keys))
    # several launches (or plain run dirs) may also differ in their fixed overrides: show those too
    all_keys = sorted({k for r in runs if r.path is not None for k in r.overrides})
    keys.update(dict.fromkeys(k for k in all_keys if len({r.overrides.get(k) for r in runs if r.path}) > 1))
    return list(keys)


# -- ordering, metric choice, formatting ----------------------------------------------------------
def sort_token(value: str | None) -> tuple:
    """Numbers in numeric order before other values in text order; missing values last."""
    if value is None:
        return (2, 0.0, "")
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def sort_runs(runs: list[RunRecord], keys: Sequence[str]) -> list[RunRecord]:
    return sorted(runs, key=lambda r: ([sort_token(r.overrides.get(k)) for k in keys], r.label))


def describe(run: RunRecord, keys: Sequence[str]) -> str:
    names = short_names(list(keys))
    text = ", ".join(f"{names[k]}={run.overrides.get(k, '—')}" for k in keys)
    return text or run.label


def read_history(run: RunRecord) -> list[dict[str, str]]:
    """Rows of the run's CSV log (Lightning writes one sparse row per logging call)."""
    if run.path is None:
        return []
    for name in HISTORY_FILES:
        path = run.path / name
        if path.is_file():
            with path.open(newline="") as handle:
                return list(csv.DictReader(handle))
    return []


def curve(rows: Sequence[Mapping[str, str]], column: str) -> list[tuple[float, float]]:
    points = []
    for row in rows:
        step, value = as_number(row.get("step")), as_number(row.get(column))
        if step is not None and value is not None:
            points.append((step, value))
    return points

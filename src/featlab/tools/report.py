"""Study reports generated from run directories, so a comparison is a product of the suite.

``python -m featlab.tools.report runs/sisr_loss_weight/multirun-... --out experiments/sisr_loss_weight/report.md``

Reads every run's ``results.json`` (and ``csv/metrics.csv`` for training curves) and writes a
markdown table of final metrics per swept value (best marked), speed and peak memory per run, plus
PNG plots beside the markdown: the metric against the swept value and overlaid training curves.

Runs that failed, or that a sweep launched but never finished (a job folder without
``results.json``, or a grid point of ``multirun.yaml`` with no folder at all), are rows marked
failed/missing: a silently shorter table would read like a complete study. The same inputs give
byte-identical outputs (sorted rows, fixed number formats, no timestamps, no PNG metadata), so a
regenerated report only shows up in a diff when a result changed.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featlab.cli import exit_on_user_error
from featlab.errors import ConfigError
from featlab.files import save_figure as write_figure
from featlab.files import write_text
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
def _number(value: Any) -> float | None:
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
def _sort_token(value: str | None) -> tuple:
    """Numbers in numeric order before other values in text order; missing values last."""
    if value is None:
        return (2, 0.0, "")
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def sort_runs(runs: list[RunRecord], keys: Sequence[str]) -> list[RunRecord]:
    return sorted(runs, key=lambda r: ([_sort_token(r.overrides.get(k)) for k in keys], r.label))


def choose_metric(runs: Sequence[RunRecord], metric: str | None, mode: str | None) -> tuple[str, str]:
    """The metric to rank by: as given, else the task's monitor; ``mode`` from the monitor or the name."""
    monitor = next((r.config.get("task", {}).get("monitor") for r in runs
                    if isinstance(r.config.get("task"), Mapping) and r.config["task"].get("monitor")), None) or {}
    chosen = metric or monitor.get("metric")
    present = {k for r in runs if r.ok for k in r.metrics}
    if not metric and chosen and chosen not in present and chosen.startswith("val/"):
        # runs too short to validate (max_steps inside the first epoch) still have the test value
        test_twin = "test/" + chosen.removeprefix("val/")
        chosen = test_twin if test_twin in present else chosen
    if not chosen:
        finished = [r for r in runs if r.ok and r.metrics]
        chosen = "val/loss" if not finished else sorted(finished[0].metrics)[0]
    if mode is None and monitor.get("metric") and chosen.split("/", 1)[-1] == monitor["metric"].split("/", 1)[-1]:
        mode = monitor.get("mode")  # the monitor's direction holds for its test twin too
    if mode is None:
        mode = "min" if any(word in chosen for word in ("loss", "error", "lpips", "fid")) else "max"
    if mode not in ("min", "max"):
        raise ConfigError("--mode", f"mode must be min or max, got '{mode}'")
    return chosen, mode


def extra_columns(runs: Sequence[RunRecord], metric: str, limit: int = MAX_EXTRA_COLUMNS) -> list[str]:
    """Stage-level metrics (``val/x``, ``test/x``; not per-benchmark ``val/set5/x``) that vary between runs."""
    finished = [r for r in runs if r.ok]
    names = {k for r in finished for k in r.metrics
             if k != metric and k.split("/", 1)[0] in ("val", "test") and k.count("/") == 1}
    if len(finished) > 1:  # a column equal in every run (e.g. the bicubic baseline) compares nothing
        names = {k for k in names if len({fmt(r.metrics.get(k)) for r in finished}) > 1}
    return sorted(names, key=lambda k: (k.split("/", 1)[0] != "test", k))[:limit]


def fmt(value: Any, digits: int = 4) -> str:
    number = _number(value)
    if number is None:
        return "—" if value is None or value == "" else str(value)
    return f"{number:.{digits}f}"


def best_runs(runs: Sequence[RunRecord], metric: str, mode: str) -> list[RunRecord]:
    """The finished runs with the best value as printed (ties all marked: one star would be arbitrary)."""
    scored = [(r, _number(r.metrics.get(metric))) for r in runs if r.ok]
    scored = [(r, v) for r, v in scored if v is not None]
    if not scored:
        return []
    pick = max if mode == "max" else min
    best = fmt(pick(v for _, v in scored))
    return [r for r, v in scored if fmt(v) == best]


def describe(run: RunRecord, keys: Sequence[str]) -> str:
    names = short_names(list(keys))
    text = ", ".join(f"{names[k]}={run.overrides.get(k, '—')}" for k in keys)
    return text or run.label


# -- plots ----------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """PNG without the Software/date metadata matplotlib adds, so reruns give identical bytes."""
    plt = _pyplot()
    write_figure(fig, path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def _x_axis(values: Sequence[str]) -> tuple[list[float], bool, bool]:
    """Positions for swept values: numeric when all are numbers (log when they span decades)."""
    numbers = [_number(v) for v in values]
    if values and all(n is not None for n in numbers):
        positive = all(n > 0 for n in numbers)  # type: ignore[operator]
        log_scale = positive and max(numbers) / min(numbers) >= 20  # type: ignore[type-var,operator]
        return [float(n) for n in numbers], True, log_scale  # type: ignore[arg-type]
    return list(map(float, range(len(values)))), False, False


def plot_metric(runs: Sequence[RunRecord], keys: Sequence[str], metric: str, path: Path) -> Path | None:
    """The metric against the swept value with most levels, one line per combination of the others."""
    finished = [r for r in runs if r.ok and _number(r.metrics.get(metric)) is not None]
    if not finished:
        return None
    plt = _pyplot()
    levels = {k: sorted({r.overrides.get(k, "—") for r in runs}, key=_sort_token) for k in keys}
    x_key = max(keys, key=lambda k: len(levels[k])) if keys else None
    x_values = levels[x_key] if x_key else [r.label for r in finished]
    positions, numeric, log_scale = _x_axis(x_values)
    where = dict(zip(x_values, positions))
    others = [k for k in keys if k != x_key]
    names = short_names(list(keys))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    series = sorted({tuple(r.overrides.get(k, "—") for k in others) for r in finished},
                    key=lambda s: [_sort_token(v) for v in s])
    for combo in series:
        points = sorted(
            (where[r.overrides.get(x_key, "—") if x_key else r.label], _number(r.metrics[metric]))
            for r in finished if tuple(r.overrides.get(k, "—") for k in others) == combo)
        label = ", ".join(f"{names[k]}={v}" for k, v in zip(others, combo)) or None
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label,
                linestyle="-" if numeric else ":")
    if log_scale:
        ax.set_xscale("log")
    ax.set_xticks(positions)
    ax.set_xticklabels(x_values, rotation=30 if not numeric else 0, ha="right" if not numeric else "center")
    ax.minorticks_off()
    ax.set_xlabel(names[x_key] if x_key else "run")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


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
        step, value = _number(row.get("step")), _number(row.get(column))
        if step is not None and value is not None:
            points.append((step, value))
    return points


def plot_curves(runs: Sequence[RunRecord], keys: Sequence[str], metric: str, path: Path) -> Path | None:
    """Training loss and the ranked metric against the step, every run overlaid."""
    histories = [(r, read_history(r)) for r in runs]
    histories = [(r, rows) for r, rows in histories if rows]
    if not histories:
        return None
    plt = _pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    drawn = 0
    for run, rows in histories:
        label = describe(run, keys) + ("" if run.ok else f" ({run.status})")
        column = next((c for c in TRAIN_LOSS_COLUMNS if c in rows[0]), None)
        loss_points = curve(rows, column) if column else []
        metric_points = curve(rows, metric)
        if loss_points:
            loss_ax.plot(*zip(*loss_points), label=label, linewidth=1.0)
        if metric_points:
            metric_ax.plot(*zip(*metric_points), marker="o", markersize=3, label=label)
        drawn += bool(loss_points or metric_points)
    if not drawn:
        plt.close(fig)
        return None
    for ax, title in ((loss_ax, "train loss"), (metric_ax, metric)):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# -- markdown ---------------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def _first_line(text: str | None, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "(no error recorded)"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render(runs: Sequence[RunRecord], launches: Sequence[Launch], keys: Sequence[str], metric: str,
           mode: str, plots: Mapping[str, Path | None], out: Path, sources: Sequence[str],
           columns: Sequence[str] | None = None) -> str:
    """The report's markdown: what was compared, the table, the plots and the failures."""
    best = best_runs(runs, metric, mode)
    columns = list(columns) if columns else extra_columns(runs, metric)
    names = short_names(list(keys))
    study = next((str(r.config.get("study")) for r in runs if r.config.get("study")), "runs")
    counts = {s: sum(r.status == s for r in runs) for s in sorted({r.status for r in runs})}
    lines = [f"# Report: {study}", ""]
    lines.append(f"- Runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    lines.append(f"- Ranked by `{metric}` ({'higher' if mode == 'max' else 'lower'} is better; final value)")
    lines.append(f"- Swept: {', '.join(f'`{k}`' for k in keys) or '(nothing differs between the runs)'}")
    lines.append(f"- Source: {', '.join(f'`{s}`' for s in sources)}")
    for launch in launches:
        params = ", ".join(f"`{k}={v}`" for k, v in launch.params.items())
        lines.append(f"- Launch `{launch.path.name}`: `python train.py -m {' '.join(launch.overrides)}`"
                     + (f" (sweeper params: {params})" if params else ""))
    commits = sorted({r.git_commit for r in runs if r.git_commit})
    if commits:
        lines.append(f"- Code: {', '.join(f'`{c}`' for c in commits)}")
    if len(best) == 1:
        lines.append(f"- **Best: {describe(best[0], keys)}** ({metric} = {fmt(best[0].metrics.get(metric))})")
    elif best:
        lines.append(f"- **No single best: {len(best)} runs tie** at {metric} = {fmt(best[0].metrics.get(metric))}")
    lines += ["", "## Final metrics", ""]
    header = ["run", *[names[k] for k in keys], "status", metric, *columns,
              "img/s", "step ms", "peak MB", "steps", "time s"]
    rows = []
    for run in runs:
        value = fmt(run.metrics.get(metric)) if run.ok else "—"
        if any(run is b for b in best):
            value = f"**{value}** ★"
        rows.append([
            run.label, *[run.overrides.get(k, "—") for k in keys], run.status if run.ok else f"**{run.status}**",
            value, *[fmt(run.metrics.get(c)) if run.ok else "—" for c in columns],
            fmt(run.speed.get("images_per_s"), 1), fmt(run.speed.get("step_ms"), 1),
            fmt(run.speed.get("peak_memory_mb"), 0), fmt(run.global_step, 0), fmt(run.wall_time_s, 1),
        ])
    lines += _table(header, rows)
    lines += ["", "★ best finished run(s). img/s and step time exclude warm-up steps; peak MB is GPU memory on GPU, "
              "process RSS on CPU."]
    for title, path in plots.items():
        if path is not None:
            lines += ["", f"## {title}", "", f"![{title}]({path.relative_to(out.parent).as_posix()})"]
    failures = [r for r in runs if not r.ok]
    if failures:
        lines += ["", "## Failed or missing runs", ""]
        lines += [f"- {r.label} ({describe(r, keys)}): {r.status}: {_first_line(r.error)}" for r in failures]
    return "\n".join(lines) + "\n"


def write_report(paths: Sequence[str | Path], out: str | Path | None = None, metric: str | None = None,
                 mode: str | None = None, columns: Sequence[str] | None = None) -> Path:
    """Build the report for ``paths``; returns the markdown file (PNGs are written beside it)."""
    runs, launches = find_runs(paths)
    runs = add_missing_jobs(runs, launches)
    keys = study_keys(runs, launches)
    runs = sort_runs(runs, keys)
    metric, mode = choose_metric(runs, metric, mode)
    first = Path(paths[0])
    out_path = Path(out) if out else (first if first.is_dir() else first.parent) / "report.md"
    stem = out_path.with_suffix("")
    slug = "".join(c if c.isalnum() else "_" for c in metric).strip("_")
    plots = {
        f"{metric} per swept value": plot_metric(runs, keys, metric, Path(f"{stem}_{slug}.png")),
        "Training curves": plot_curves(runs, keys, metric, Path(f"{stem}_curves.png")),
    }
    markdown = render(runs, launches, keys, metric, mode, plots, out_path, [str(p) for p in paths], columns)
    write_text(out_path, markdown)
    return out_path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m featlab.tools.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="multirun dirs, run dirs or folders above them")
    parser.add_argument("--out", help="markdown file to write (default: <first dir>/report.md)")
    parser.add_argument("--metric", help="metric to rank by (default: the task's monitor, e.g. val/psnr)")
    parser.add_argument("--mode", choices=("min", "max"), help="whether lower or higher is better")
    parser.add_argument("--columns", nargs="+", help="metrics to show beside the ranked one "
                        "(default: val/ and test/ metrics that differ between runs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    path = exit_on_user_error(lambda: write_report(args.runs, args.out, args.metric, args.mode,
                                                                args.columns))
    print(path)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])

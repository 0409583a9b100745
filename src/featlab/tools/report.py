"""Study reports generated from run directories, so a comparison is a product of the suite.

``python -m featlab.tools.report runs/sisr_loss_weight/multirun-... --out experiments/sisr_loss_weight/report.md``

Reads every run's ``results.json`` (and ``csv/metrics.csv`` for training curves) and writes markdown:
per configuration (runs that differ only by ``seed``) the metric's mean ± 95 % CI over seeds
(`study_stats`), a best configuration only when at least 3 seeds each and non-overlapping intervals
support it, the baselines the runs logged, then one row per run with speed and peak memory, plus
PNG plots beside the markdown (`study_plots`): the metric against the swept value with error bars
and baselines, and overlaid training curves.

Runs that failed, or that a sweep launched but never finished (a job folder without
``results.json``, or a grid point of ``multirun.yaml`` with no folder at all), are rows marked
failed/missing: a silently shorter table would read like a complete study. The same inputs give
byte-identical outputs (sorted rows, fixed number formats, no timestamps, no PNG metadata), so a
regenerated report only shows up in a diff when a result changed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from featlab.cli import exit_on_user_error
from featlab.errors import ConfigError
from featlab.files import write_text
from featlab.loggers import short_names
from featlab.tools.study_plots import plot_curves, plot_metric
from featlab.tools.study_runs import (
    MAX_EXTRA_COLUMNS,
    Launch,
    RunRecord,
    add_missing_jobs,
    as_number,
    describe,
    find_runs,
    sort_runs,
    study_keys,
)
from featlab.tools.study_stats import (
    CONFIDENCE,
    MIN_SEEDS,
    ConfigGroup,
    Interval,
    baselines,
    config_keys,
    group_runs,
    verdict,
)

__all__ = ["find_runs", "main", "write_report"]


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
    number = as_number(value)
    if number is None:
        return "—" if value is None or value == "" else str(value)
    return f"{number:.{digits}f}"


PLOT_NOTE = ("Points: mean over seeds with its 95 % interval; a hollow marker has one seed (no interval). "
             "Categorical values are not joined. Dashed lines: baselines. The y axis covers every point, "
             "interval and baseline, starts at 0 for fractions and losses, and spans at least 10 % of the "
             "largest value, so seed noise is not magnified.")


def metric_plot_title(metric: str) -> str:
    return f"{metric} per swept value"


# -- markdown ---------------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def _first_line(text: str | None, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "(no error recorded)"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _interval_text(interval: Interval | None) -> tuple[str, str]:
    """``mean ± half-width`` and ``[low, high]`` cells; one seed has no interval."""
    if interval is None:
        return "—", "—"
    if interval.half_width is None:
        return f"{fmt(interval.mean)} (1 seed, no interval)", "—"
    return f"{fmt(interval.mean)} ± {fmt(interval.half_width)}", f"[{fmt(interval.low)}, {fmt(interval.high)}]"


def config_table(runs: Sequence[RunRecord], keys: Sequence[str], metric: str, columns: Sequence[str],
                 best: ConfigGroup | None) -> list[str]:
    """One row per configuration: seeds, the metric's mean ± 95 % CI, the other columns' means."""
    names = short_names(config_keys(keys))
    header = [*[names[k] for k in config_keys(keys)], "seeds", f"{metric} mean ± 95 % CI", "95 % CI",
              *columns, "failed/missing"]
    rows = []
    for group in group_runs(runs, keys):
        mean, bounds = _interval_text(group.interval(metric))
        if group is best or (best is not None and group.values == best.values):
            mean = f"**{mean}** ★"
        seeds = group.seeds(metric)
        rows.append([*group.values, f"{len(seeds)} ({', '.join(seeds)})" if seeds else "0", mean, bounds,
                     *[fmt(group.interval(c).mean) if group.interval(c) else "—" for c in columns],
                     str(sum(not r.ok for r in group.runs))])
    return _table(header, rows)


def render(runs: Sequence[RunRecord], launches: Sequence[Launch], keys: Sequence[str], metric: str,
           mode: str, plots: Mapping[str, Path | None], out: Path, sources: Sequence[str],
           columns: Sequence[str] | None = None) -> str:
    """The report's markdown: what was compared, the verdict, per-configuration and per-run tables,
    the plots and the failures."""
    groups = group_runs(runs, keys)
    decision = verdict(groups, keys, metric, mode)
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
    found = baselines(runs, metric)
    if found:
        lines.append("- Baselines: " + ", ".join(f"{b.label} = {fmt(b.value)} (`{b.key}`)" for b in found))
    if decision.best is not None:
        best = decision.best.interval(metric)
        lines.append(f"- **Best: {decision.text}** ({metric} = {_interval_text(best)[0]}, {best.n} seeds)")
    else:
        lines.append(f"- Best: none named ({decision.text})")
    lines += ["", "## Per configuration", ""]
    lines += config_table(runs, keys, metric, columns, decision.best)
    lines += ["", f"Mean over seeds ± the half-width of the {CONFIDENCE:.0%} Student-t interval "
              f"(t quantile with n - 1 degrees of freedom x sample std / sqrt(n)). ★ marks a best configuration, "
              f"named only when every configuration has at least {MIN_SEEDS} seeds and its interval separates "
              "from every other's."]
    lines += ["", "## Final metrics", ""]
    header = ["run", *[names[k] for k in keys], "status", metric, *columns,
              "img/s", "step ms", "peak MB", "steps", "time s"]
    rows = []
    for run in runs:
        rows.append([
            run.label, *[run.overrides.get(k, "—") for k in keys], run.status if run.ok else f"**{run.status}**",
            fmt(run.metrics.get(metric)) if run.ok else "—",
            *[fmt(run.metrics.get(c)) if run.ok else "—" for c in columns],
            fmt(run.speed.get("images_per_s"), 1), fmt(run.speed.get("step_ms"), 1),
            fmt(run.speed.get("peak_memory_mb"), 0), fmt(run.global_step, 0), fmt(run.wall_time_s, 1),
        ])
    lines += _table(header, rows)
    lines += ["", "One row per run. img/s and step time exclude warm-up steps; peak MB is GPU memory on GPU, "
              "process RSS on CPU."]
    for title, path in plots.items():
        if path is not None:
            lines += ["", f"## {title}", "", f"![{title}]({path.relative_to(out.parent).as_posix()})"]
            if title == metric_plot_title(metric):
                lines += ["", PLOT_NOTE]
    failures = [r for r in runs if not r.ok]
    if failures:
        lines += ["", "## Failed or missing runs", ""]
        lines += [f"- {r.label} ({describe(r, keys)}): {r.status}: {_first_line(r.error)}" for r in failures]
    return "\n".join(lines) + "\n"


def write_report(paths: Sequence[str | Path], out: str | Path | None = None, metric: str | None = None,
                 mode: str | None = None, columns: Sequence[str] | None = None,
                 wandb_project: str | None = None) -> Path:
    """Build the report for ``paths``; returns the markdown file (PNGs are written beside it).
    ``wandb_project`` also logs the plots (as media) and the markdown to a W&B run of that project."""
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
        metric_plot_title(metric): plot_metric(runs, keys, metric, Path(f"{stem}_{slug}.png")),
        "Training curves": plot_curves(runs, keys, metric, Path(f"{stem}_curves.png")),
    }
    markdown = render(runs, launches, keys, metric, mode, plots, out_path, [str(p) for p in paths], columns)
    write_text(out_path, markdown)
    if wandb_project:
        where = log_report_to_wandb(out_path, plots, wandb_project)
        print(f"W&B: {where}")
    return out_path


def log_report_to_wandb(out_path: Path, plots: Mapping[str, Path | None], project: str) -> str:
    """One W&B run (job type ``report``) holding the plots as images and the markdown file; online
    with credentials, offline otherwise (like training runs). Returns its page or its sync command."""
    import wandb

    from featlab.loggers import wandb_mode, wandb_settings

    mode = wandb_mode("auto")
    run = wandb.init(project=project, name=f"report:{out_path.parent.name}/{out_path.stem}", job_type="report",
                     tags=["report"], dir=str(out_path.parent), mode=mode, settings=wandb_settings())
    run.log({title: wandb.Image(str(path)) for title, path in plots.items() if path is not None})
    run.save(str(out_path), base_path=str(out_path.parent), policy="now")
    where = run.url if mode == "online" else f"wandb sync {Path(run.dir).parent}"
    run.finish()
    return where or ""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m featlab.tools.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="multirun dirs, run dirs or folders above them")
    parser.add_argument("--out", help="markdown file to write (default: <first dir>/report.md)")
    parser.add_argument("--metric", help="metric to rank by (default: the task's monitor, e.g. val/psnr)")
    parser.add_argument("--mode", choices=("min", "max"), help="whether lower or higher is better")
    parser.add_argument("--wandb", metavar="PROJECT", help="also log the plots and the report to a W&B run "
                        "of PROJECT (online with credentials, else offline with a sync line)")
    parser.add_argument("--columns", nargs="+", help="metrics to show beside the ranked one "
                        "(default: val/ and test/ metrics that differ between runs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    path = exit_on_user_error(lambda: write_report(args.runs, args.out, args.metric, args.mode,
                                                                args.columns, args.wandb))
    print(path)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])

"""Study plots: a metric against the swept value, and overlaid training curves.

PNG files without the Software/date metadata, so the same runs give byte-identical figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from featlab.files import save_figure as write_figure
from featlab.loggers import short_names
from featlab.tools.study_runs import (
    TRAIN_LOSS_COLUMNS,
    RunRecord,
    as_number,
    curve,
    describe,
    read_history,
    sort_token,
)


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
    numbers = [as_number(v) for v in values]
    if values and all(n is not None for n in numbers):
        positive = all(n > 0 for n in numbers)  # type: ignore[operator]
        log_scale = positive and max(numbers) / min(numbers) >= 20  # type: ignore[type-var,operator]
        return [float(n) for n in numbers], True, log_scale  # type: ignore[arg-type]
    return list(map(float, range(len(values)))), False, False


def plot_metric(runs: Sequence[RunRecord], keys: Sequence[str], metric: str, path: Path) -> Path | None:
    """The metric against the swept value with most levels, one line per combination of the others."""
    finished = [r for r in runs if r.ok and as_number(r.metrics.get(metric)) is not None]
    if not finished:
        return None
    plt = _pyplot()
    levels = {k: sorted({r.overrides.get(k, "—") for r in runs}, key=sort_token) for k in keys}
    x_key = max(keys, key=lambda k: len(levels[k])) if keys else None
    x_values = levels[x_key] if x_key else [r.label for r in finished]
    positions, numeric, log_scale = _x_axis(x_values)
    where = dict(zip(x_values, positions))
    others = [k for k in keys if k != x_key]
    names = short_names(list(keys))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    series = sorted({tuple(r.overrides.get(k, "—") for k in others) for r in finished},
                    key=lambda s: [sort_token(v) for v in s])
    for combo in series:
        points = sorted(
            (where[r.overrides.get(x_key, "—") if x_key else r.label], as_number(r.metrics[metric]))
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

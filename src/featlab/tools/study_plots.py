"""Study plots: a metric (mean and 95 % interval over seeds) against the swept value with the
study's baselines, and overlaid training curves.

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
from featlab.tools.study_stats import baselines, config_keys, group_runs


# -- plots ----------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """PNG without the Software/date metadata matplotlib adds, so reruns give identical bytes."""
    plt = _pyplot()
    # tight bbox: the figure grows to hold a legend placed outside the axes
    write_figure(fig, path, dpi=100, metadata={"Software": None}, bbox_inches="tight")
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


# y-axis rule: the axis covers every mean, error bar and baseline drawn; fractions (accuracies,
# ARI, mBO, SSIM, rates) and losses also cover 0, their natural reference; and the span is never
# narrower than 10 % of the largest magnitude shown (2.5 dB at 25 dB PSNR), so seed noise is not
# blown up to fill the figure.
FRACTION_WORDS = ("accuracy", "top1", "top5", "ari", "mbo", "ssim", "rate", "miou", "loss")
MIN_RELATIVE_SPAN = 0.10


def y_limits(values: Sequence[float], metric: str) -> tuple[float, float]:
    """The y range of a metric plot under the rule above."""
    low, high = min(values), max(values)
    if any(word in metric.rpartition("/")[2] for word in FRACTION_WORDS):
        low, high = min(low, 0.0), max(high, 0.0)
    span = max(high - low, MIN_RELATIVE_SPAN * max(abs(low), abs(high)), 1e-12)
    centre = 0.5 * (low + high)
    low, high = min(low, centre - span / 2), max(high, centre + span / 2)
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def _legend_outside(ax) -> None:
    """Legend to the right of the axes, never over the data (the figure grows to hold it)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def plot_metric(runs: Sequence[RunRecord], keys: Sequence[str], metric: str, path: Path) -> Path | None:
    """Mean and 95 % interval over seeds against the swept value with most levels, one series per
    combination of the others, with the study's baselines as horizontal lines.

    Categorical values are points with error bars, side by side, never joined (a line between
    backbones would suggest an order); numeric values are joined. A hollow marker has one seed and
    no interval.
    """
    keys = config_keys(keys)
    groups = [(g, g.interval(metric)) for g in group_runs(runs, keys)]
    groups = [(g, i) for g, i in groups if i is not None]
    if not groups:
        return None
    plt = _pyplot()
    levels = {k: sorted({r.overrides.get(k, "—") for r in runs}, key=sort_token) for k in keys}
    x_key = max(keys, key=lambda k: len(levels[k])) if keys else None
    x_index = keys.index(x_key) if x_key else None
    x_values = levels[x_key] if x_key else ["all runs"]
    positions, numeric, log_scale = _x_axis(x_values)
    where = dict(zip(x_values, positions))
    others = [k for k in keys if k != x_key]
    names = short_names(list(keys))

    def rest(group) -> tuple[str, ...]:
        return tuple(v for i, v in enumerate(group.values) if i != x_index)

    series = sorted({rest(g) for g, _ in groups}, key=lambda s: [sort_token(v) for v in s])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn: list[float] = []
    for number, combo in enumerate(series):
        offset = 0.0 if numeric or len(series) == 1 else 0.25 * (number - (len(series) - 1) / 2) / len(series)
        points = sorted((where[g.values[x_index]] if x_key else 0.0, i) for g, i in groups if rest(g) == combo)
        xs = [x + offset for x, _ in points]
        label = ", ".join(f"{names[k]}={v}" for k, v in zip(others, combo)) or "mean ± 95 % CI"
        color = f"C{number % 10}"
        if numeric and len(points) > 1:
            ax.plot(xs, [i.mean for _, i in points], linestyle="-", linewidth=1.0, color=color)
        several = [(x, i) for x, (_, i) in zip(xs, points) if i.half_width is not None]
        single = [(x, i) for x, (_, i) in zip(xs, points) if i.half_width is None]
        if several:
            ax.errorbar([x for x, _ in several], [i.mean for _, i in several], color=color, label=label,
                        yerr=[i.half_width for _, i in several], marker="o", capsize=3, linestyle="none")
        if single:  # one seed: a hollow marker, no interval
            ax.plot([x for x, _ in single], [i.mean for _, i in single], marker="o", linestyle="none",
                    markerfacecolor="white", color=color, label=None if several else label)
        drawn += [i.low for _, i in points] + [i.high for _, i in points]
    for number, baseline in enumerate(baselines(runs, metric)):
        ax.axhline(baseline.value, color="0.35", linewidth=1.0, linestyle=("--", ":", "-.", (0, (5, 1)))[number % 4],
                   label=f"{baseline.label} ({baseline.key}) = {baseline.value:.4g}")
        drawn.append(baseline.value)
    ax.set_ylim(*y_limits(drawn, metric))
    if log_scale:
        ax.set_xscale("log")
    ax.set_xticks(positions)
    ax.set_xticklabels(x_values, rotation=30 if not numeric else 0, ha="right" if not numeric else "center")
    ax.minorticks_off()
    if not numeric:
        ax.set_xlim(positions[0] - 0.5, positions[-1] + 0.5)
    ax.set_xlabel(names[x_key] if x_key else "")
    ax.set_ylabel(f"{metric} (mean ± 95 % CI over seeds)")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
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
    _legend_outside(metric_ax if metric_ax.lines else loss_ax)  # one legend: the runs are the same
    return save_figure(fig, path)

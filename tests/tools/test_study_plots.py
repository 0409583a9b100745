"""The study plot: error bars over seeds, no lines between categories, baselines, honest y axis."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from featlab.tools import study_plots  # noqa: E402
from featlab.tools.study_plots import plot_metric, y_limits  # noqa: E402
from featlab.tools.study_runs import RunRecord  # noqa: E402


def runs_of(scores: dict[str, list[float]], key: str, extra: dict | None = None) -> list[RunRecord]:
    return [RunRecord(f"{value}{seed}", None, "finished", {key: value, "seed": str(seed)},
                      {"val/psnr": score, **(extra or {})})
            for value, scores_ in scores.items() for seed, score in enumerate(scores_)]


@pytest.fixture
def captured(monkeypatch):
    """The figure handed to save_figure (still open), besides the PNG it writes."""
    figures = []
    original = study_plots.save_figure

    def keep(fig, path):
        figures.append((fig, [ax.get_ylim() for ax in fig.axes], [ax.get_legend() for ax in fig.axes]))
        return original(fig, path)

    monkeypatch.setattr(study_plots, "save_figure", keep)
    return figures


def test_categorical_sweep_is_points_with_error_bars_and_baselines(tmp_path, captured):
    runs = runs_of({"vgg19": [25.6, 25.7, 25.8], "dino_vits16": [25.7, 25.75, 25.8], "convnext": [25.5]},
                   "loss.perceptual.backbone", {"val/psnr_bicubic": 24.0})
    path = plot_metric(runs, ["loss.perceptual.backbone", "seed"], "val/psnr", tmp_path / "p.png")
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")
    (fig, (ylim,), (legend,)) = captured[0]
    ax = fig.axes[0]
    means = [line for line in ax.lines if line.get_marker() == "o"]
    assert sorted(len(line.get_xdata()) for line in means) == [1, 2]  # 3 seeds each | convnext's 1
    assert all(line.get_linestyle() == "None" for line in means)  # no line joins categories
    (hollow,) = [line for line in means if len(line.get_xdata()) == 1]
    assert hollow.get_markerfacecolor() == "white" and list(hollow.get_xdata()) == [0.0]  # convnext: no CI
    assert [t.get_text() for t in ax.get_xticklabels()] == ["convnext", "dino_vits16", "vgg19"]
    assert len(ax.collections) == 1 and len(ax.collections[0].get_segments()) == 2  # an error bar per 3 seeds
    assert ylim[0] < 24.0 < ylim[1]  # the bicubic baseline is in view
    assert any("bicubic" in t.get_text() for t in legend.get_texts())
    fig.canvas.draw()  # legend outside the data: to the right of the axes
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_numeric_sweep_is_joined(tmp_path, captured):
    runs = runs_of({"0.03": [25.0, 25.2, 25.1], "0.1": [24.0, 24.1, 24.3], "0.3": [22.0, 22.5, 22.1]},
                   "loss.perceptual.weight")
    plot_metric(runs, ["loss.perceptual.weight"], "val/psnr", tmp_path / "p.png")
    ax = captured[0][0].axes[0]
    assert any(line.get_linestyle() == "-" and len(line.get_xdata()) == 3 for line in ax.lines)


def test_y_axis_is_not_zoomed_onto_seed_noise():
    low, high = y_limits([25.6, 25.8], "val/psnr")  # no baseline: at least 10 % of 25.8 dB
    assert high - low >= 2.58
    assert y_limits([0.575, 0.6], "test/id_accuracy")[0] <= 0.0  # fractions start from 0
    low, high = y_limits([22.0, 29.4], "val/psnr")  # a wide range is left as it is (plus 5 % padding)
    assert (low, high) == pytest.approx((22.0 - 0.37, 29.4 + 0.37))

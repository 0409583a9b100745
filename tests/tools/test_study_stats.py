"""Seeds, intervals and the "best" verdict, checked against scipy as an independent route."""

from __future__ import annotations

import pytest
from scipy import stats

from featlab.tools.study_runs import RunRecord
from featlab.tools.study_stats import baselines, group_runs, mean_ci, t_quantile, verdict


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 30, 200])
@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(dof, p):
    assert t_quantile(p, dof) == pytest.approx(stats.t.ppf(p, dof), rel=1e-9)


def test_textbook_t_values():
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=5e-4)  # the table every course prints
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=5e-4)


@pytest.mark.parametrize("values", [[25.0, 26.0, 21.0], [0.575, 0.6, 0.575, 0.55, 0.6], [1.0, 1.0 + 1e-9]])
def test_mean_ci_matches_scipy_t_interval(values):
    interval = mean_ci(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values), scale=stats.sem(values))
    assert interval.n == len(values)
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9, abs=1e-12)


def test_one_value_has_no_interval():
    interval = mean_ci([0.6])
    assert interval.half_width is None and interval.low == interval.high == 0.6
    with pytest.raises(ValueError):
        mean_ci([])


def runs_of(scores: dict[str, list[float]], metric: str = "val/psnr") -> list[RunRecord]:
    return [RunRecord(f"{name}{seed}", None, "finished", {"net": name, "seed": str(seed)}, {metric: value})
            for name, values in scores.items() for seed, value in enumerate(values)]


KEYS = ["net", "seed"]


def test_separating_intervals_name_a_best():
    runs = runs_of({"a": [30.0, 30.2, 30.1], "b": [28.0, 28.1, 27.9], "c": [29.0, 29.3, 29.1]})
    groups = group_runs(runs, KEYS)
    assert [g.values for g in groups] == [("a",), ("b",), ("c",)]  # the seed names no configuration
    decision = verdict(groups, KEYS, "val/psnr", "max")
    assert decision.best is not None and decision.best.values == ("a",)
    low = verdict(groups, KEYS, "val/psnr", "min")  # lower is better: b separates below the others
    assert low.best is not None and low.best.values == ("b",)


def test_overlapping_intervals_are_inconclusive_even_with_a_higher_mean():
    runs = runs_of({"a": [30.0, 31.5, 29.0], "b": [29.5, 29.8, 30.1], "c": [20.0, 20.1, 20.2]})
    decision = verdict(group_runs(runs, KEYS), KEYS, "val/psnr", "max")
    assert decision.best is None
    assert decision.text.startswith("inconclusive: intervals overlap") and "net=b" in decision.text
    assert "net=c" not in decision.text  # c is clearly worse: only the overlapping ones are named


def test_fewer_than_three_seeds_never_name_a_best():
    single = runs_of({"a": [0.600], "b": [0.575], "c": [0.575]})  # the DSR study's situation
    decision = verdict(group_runs(single, KEYS), KEYS, "val/psnr", "max")
    assert decision.best is None and decision.text.startswith("inconclusive: fewer than 3 seeds in 3 of 3")
    two = runs_of({"a": [40.0, 40.1], "b": [10.0, 10.1, 10.2]})  # separated, but a has 2 seeds
    assert verdict(group_runs(two, KEYS), KEYS, "val/psnr", "max").best is None
    reruns = runs_of({"a": [40.0, 40.1, 40.2], "b": [10.0, 10.1, 10.2]})
    reruns[2].overrides["seed"] = "0"  # a's third run repeats seed 0: two distinct seeds
    assert "fewer than 3 seeds in 1 of 2" in verdict(group_runs(reruns, KEYS), KEYS, "val/psnr", "max").text
    failed = runs_of({"a": [40.0, 40.1, 40.2], "b": [10.0, 10.1, 10.2]})
    failed[0].status = "failed"  # a failed seed is not a seed
    assert "fewer than 3 seeds in 1 of 2" in verdict(group_runs(failed, KEYS), KEYS, "val/psnr", "max").text


def test_baselines_come_from_the_logged_twins_and_known_chance_levels():
    runs = runs_of({"a": [25.0], "b": [26.0]})
    runs[0].metrics.update({"test/psnr_bicubic": 24.0, "val/psnr_bicubic": 23.0})
    runs[1].metrics.update({"val/psnr_bicubic": 25.0, "val/psnr_hr": 99.0})
    found = {b.label: (b.key, b.value) for b in baselines(runs, "val/psnr")}
    assert found == {"bicubic": ("val/psnr_bicubic", 24.0), "HR ceiling": ("val/psnr_hr", 99.0)}
    assert {b.label: b.key for b in baselines(runs, "test/psnr")}["bicubic"] == "test/psnr_bicubic"
    ari = baselines(runs_of({"a": [0.01]}, "test/fg_ari"), "test/fg_ari")
    assert [(b.label, b.value) for b in ari] == [("chance", 0.0)]


def test_slot_runs_fixed_split_is_drawn_beside_chance():
    """The slots task logs test/fg_ari_fixed_split: on the embedded scenes that, not 0, is the bar."""
    runs = runs_of({"a": [0.6], "b": [0.7]}, "test/fg_ari")
    runs[0].metrics["test/fg_ari_fixed_split"], runs[1].metrics["test/fg_ari_fixed_split"] = 0.5, 0.6
    found = {b.label: b.value for b in baselines(runs, "test/fg_ari")}
    assert found == {"fixed spatial split": pytest.approx(0.55), "chance": 0.0}

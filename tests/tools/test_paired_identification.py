"""Paired identification comparison: per-seed and per-probe differences, verdicts, clear errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from scipy import stats

from featlab.errors import ConfigError
from featlab.tools.paired_identification import compare, main, paired_difference

BASE = [1, 0, 0, 1]
CONFIG = {"0": [1, 1, 0, 1], "1": [1, 1, 1, 1], "2": [1, 0, 0, 1]}  # +0.25, +0.5, 0 against BASE


def probes(correct: list[int]) -> dict[int, int]:
    return {10 + i: c for i, c in enumerate(correct)}


def test_differences_over_seeds_and_over_probes_match_a_t_interval():
    diff = paired_difference({s: probes(c) for s, c in CONFIG.items()}, {s: probes(BASE) for s in CONFIG})
    assert diff.seeds == ["0", "1", "2"] and diff.gained == 3 and diff.lost == 0
    assert diff.accuracy == pytest.approx(0.75) and diff.baseline_accuracy == pytest.approx(0.5)
    # seeds: mean 0.25, sample sd 0.25 -> t_{0.975, 2} * 0.25 / sqrt(3)
    assert diff.by_seed.mean == pytest.approx(0.25)
    assert diff.by_seed.half_width == pytest.approx(stats.t.ppf(0.975, 2) * 0.25 / math.sqrt(3), rel=1e-6)
    # probes: seed-mean differences 0, 2/3, 1/3, 0
    per_probe = [0.0, 2 / 3, 1 / 3, 0.0]
    sd = stats.tstd(per_probe)
    assert diff.by_probe.mean == pytest.approx(0.25)
    assert diff.by_probe.half_width == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2, rel=1e-6)
    assert not diff.conclusive  # both intervals include 0


def test_a_consistent_gain_on_many_probes_is_conclusive():
    base = [i % 2 for i in range(200)]
    runs = {str(s): [1 if i % 2 or (i // 2 + s) % 2 == 0 else 0 for i in range(200)] for s in range(3)}
    diff = paired_difference({s: probes(c) for s, c in runs.items()}, {s: probes(base) for s in runs})
    assert diff.by_seed.low > 0 and diff.by_probe.low > 0 and diff.conclusive
    assert diff.lost == 0 and diff.gained == 3 * 50


def test_different_probe_sets_or_no_shared_seed_are_errors():
    with pytest.raises(ConfigError, match="data.split_seed"):
        paired_difference({"0": {1: 1, 2: 0}}, {"0": {1: 1, 3: 0}})
    with pytest.raises(ConfigError, match="--baseline"):
        paired_difference({"0": {1: 1}}, {"1": {1: 1}})


def make_run(root: Path, weight: str, seed: int, correct: list[int]) -> None:
    run_dir = root / f"{weight}_{seed}"
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = [f"loss.identity.weight={weight}", f"seed={seed}"]
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    results = {"status": "finished", "metrics": {"test/id_accuracy": sum(correct) / len(correct)},
               "config": {"seed": seed, "overrides": overrides}}
    (run_dir / "results.json").write_text(json.dumps(results))
    with (run_dir / "identification_predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["probe", "true_id", "predicted_id", "similarity", "correct"])
        writer.writerows([10 + i, "a", "a", "0.9", c] for i, c in enumerate(correct))


def test_run_folders_become_one_row_per_configuration(tmp_path, capsys):
    for seed, correct in CONFIG.items():
        make_run(tmp_path, "0.0", int(seed), BASE)
        make_run(tmp_path, "0.35", int(seed), correct)
    out = tmp_path / "paired.md"
    table = main([str(tmp_path), "--baseline", "loss.identity.weight=0.0", "--out", str(out)])
    assert out.read_text() == table
    rows = [line for line in table.splitlines() if line.startswith("| weight=")]
    assert len(rows) == 1 and "| weight=0.35 | 3 | 0.7500 | 0.5000 | +0.2500 ±" in rows[0]
    assert rows[0].endswith("| 3 / 0 | inconclusive: 0 is inside an interval |")
    with pytest.raises(ConfigError, match="--baseline.*values found: 0.0, 0.35"):
        compare([tmp_path], "loss.identity.weight=0.1")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--baseline", "lr=1"])
    assert exit_info.value.code == 2 and "'lr' is not a swept key" in capsys.readouterr().err

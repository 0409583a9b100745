"""Paired comparison of face-identification runs against a baseline configuration, probe by probe.

    python -m featlab.tools.paired_identification runs/dsr_identity_weight/<sweep> \
        --baseline loss.identity.weight=0.0 [--out paired.md] [--predictions identification_predictions.csv]

Why paired: two DSR configurations tested on the *same* probes (``data.split_seed`` pinned, each run
with ``dump_results=true``) differ on a few probes only; comparing two accuracies as if they came
from independent samples throws that away and needs many more probes to see the same effect. Here
each configuration's accuracy is differenced against the baseline's on the same probes and seed,
and the difference gets two 95 % intervals:

- over seeds: mean of the per-seed differences ± Student t (``n - 1`` dof), i.e. training noise on
  this probe set;
- over probes: each probe's difference averaged over the seeds, mean ± t over probes, i.e. how far
  another draw of probes could move it (the paired analogue of a Wilson interval).

An effect is called only when both intervals exclude zero; otherwise the row says inconclusive.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from featlab.cli import exit_on_user_error
from featlab.errors import ConfigError
from featlab.files import write_text
from featlab.tools.study_runs import find_runs, study_keys
from featlab.tools.study_stats import (
    ConfigGroup,
    Interval,
    config_keys,
    describe_group,
    group_runs,
    mean_ci,
    run_seed,
)

PREDICTIONS = "identification_predictions.csv"


def read_correct(path: Path) -> dict[int, int]:
    """``probe index -> 1/0`` from a predictions CSV (``probe`` and ``correct`` columns)."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise ConfigError("runs", f"cannot read {path} ({type(err).__name__}); run the study with "
                                  "dump_results=true") from None
    if rows and not {"probe", "correct"} <= set(rows[0]):
        raise ConfigError("runs", f"{path} has no probe/correct columns (written by an older featlab?)")
    return {int(r["probe"]): int(r["correct"]) for r in rows}


@dataclass(frozen=True)
class PairedDifference:
    """One configuration minus the baseline, on the seeds and probes both were tested on."""

    seeds: list[str]
    accuracy: float          # the configuration's mean accuracy over those seeds
    baseline_accuracy: float
    by_seed: Interval        # per-seed accuracy differences
    by_probe: Interval       # per-probe differences averaged over seeds
    gained: int              # (probe, seed) pairs right here and wrong in the baseline
    lost: int                # wrong here, right in the baseline

    @property
    def conclusive(self) -> bool:
        """Both intervals clear of zero (a one-seed interval never is)."""
        return all(i.half_width is not None and (i.low > 0 or i.high < 0) for i in (self.by_seed, self.by_probe))


def paired_difference(config: dict[str, dict[int, int]], baseline: dict[str, dict[int, int]]) -> PairedDifference:
    """``config`` and ``baseline``: seed -> (probe -> correct). Only seeds in both count; each seed's
    probe sets must match, or the runs were not tested on the same probes (set data.split_seed)."""
    seeds = sorted(set(config) & set(baseline), key=str)
    if not seeds:
        raise ConfigError("--baseline", "no seed was run both with the baseline and with the configuration")
    per_probe: dict[int, list[int]] = {}
    seed_diffs, accuracies, baseline_accuracies, gained, lost = [], [], [], 0, 0
    for seed in seeds:
        ours, theirs = config[seed], baseline[seed]
        if set(ours) != set(theirs) or not ours:
            raise ConfigError("data.split_seed", f"seed {seed}: the runs were tested on different probes; pin "
                                                 "data.split_seed so every run tests the same ones")
        accuracies.append(sum(ours.values()) / len(ours))
        baseline_accuracies.append(sum(theirs.values()) / len(theirs))
        seed_diffs.append(accuracies[-1] - baseline_accuracies[-1])
        for probe, correct in ours.items():
            per_probe.setdefault(probe, []).append(correct - theirs[probe])
            gained += correct > theirs[probe]
            lost += correct < theirs[probe]
    probe_means = [math.fsum(d) / len(d) for d in per_probe.values()]
    return PairedDifference(seeds, math.fsum(accuracies) / len(seeds), math.fsum(baseline_accuracies) / len(seeds),
                            mean_ci(seed_diffs), mean_ci(probe_means), gained, lost)


def _by_seed(group: ConfigGroup, predictions: str) -> dict[str, dict[int, int]]:
    return {run_seed(r): read_correct(r.path / predictions) for r in group.runs if r.ok and r.path is not None}


def _interval(i: Interval) -> str:
    if i.half_width is None:
        return f"{i.mean:+.4f} (1 value, no interval)"
    return f"{i.mean:+.4f} ± {i.half_width:.4f} [{i.low:+.4f}, {i.high:+.4f}]"


def compare(paths: Sequence[str | Path], baseline: str, predictions: str = PREDICTIONS) -> str:
    """The markdown table: one row per configuration other than ``baseline`` (``key=value``)."""
    key, sep, value = baseline.partition("=")
    if not sep:
        raise ConfigError("--baseline", f"expected key=value, e.g. loss.identity.weight=0.0; got '{baseline}'")
    runs, launches = find_runs(paths)
    keys = config_keys(study_keys(runs, launches))
    if key not in keys:
        raise ConfigError("--baseline", f"'{key}' is not a swept key of these runs; swept: {', '.join(keys) or 'none'}")
    groups = group_runs([r for r in runs if r.ok], keys)
    position = keys.index(key)
    base = [g for g in groups if g.values[position] == value]
    if len(base) != 1:
        raise ConfigError("--baseline", f"{len(base)} configurations have {key}={value}; values found: "
                                        f"{', '.join(sorted({g.values[position] for g in groups}))}")
    base_runs = _by_seed(base[0], predictions)
    probes = len(next(iter(base_runs.values())))
    lines = [f"Paired against {describe_group(base[0], keys)} on the same {probes} probes per seed "
             "(95 % intervals: over seeds, Student t; over probes, t on each probe's seed-mean difference).", "",
             "| configuration | seeds | accuracy | baseline | Δ over seeds | Δ over probes | gained / lost | verdict |",
             "|---|---:|---:|---:|---|---|---:|---|"]
    for group in groups:
        if group is base[0]:
            continue
        diff = paired_difference(_by_seed(group, predictions), base_runs)
        verdict = ("effect: both intervals exclude 0" if diff.conclusive
                   else "inconclusive: 0 is inside an interval")
        lines.append(f"| {describe_group(group, keys)} | {len(diff.seeds)} | {diff.accuracy:.4f} | "
                     f"{diff.baseline_accuracy:.4f} | {_interval(diff.by_seed)} | {_interval(diff.by_probe)} | "
                     f"{diff.gained} / {diff.lost} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m featlab.tools.paired_identification",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="multirun dirs, run dirs or folders above them")
    parser.add_argument("--baseline", required=True, help="the configuration to difference against, key=value")
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--predictions", default=PREDICTIONS, help="per-run predictions CSV name")
    args = parser.parse_args(argv)
    table = exit_on_user_error(lambda: compare(args.runs, args.baseline, args.predictions))
    if args.out:
        write_text(Path(args.out), table)
    print(table, end="")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])

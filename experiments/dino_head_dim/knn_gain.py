"""Paired reading of the head-dimension runs: what training adds to kNN, and K against K, per seed.

The random initialisation alone moves kNN top-1 by 0.09-0.18 between seeds on the embedded shapes,
so means over seeds hide a training effect of that size. Within a seed every K starts from the same
backbone (its initialisation does not depend on K) and sees the same batches, so the per-seed
differences are the effects: ``gain`` = last val kNN top-1 minus the same run's kNN before
training (``val/knn_top1_gain``, logged by the kNN callback; computed from ``val/knn_top1`` and
``val/knn_top1_init`` for runs that predate it) and ``vs K0`` = kNN at K minus kNN at the smallest
K, same seed. Mean ± 95 % Student-t interval over seeds (featlab.tools.study_stats.mean_ci).

    python experiments/dino_head_dim/knn_gain.py runs/dino_head_dim/cpu-demo-3seeds [more sweep folders]
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

from featlab.tools.study_stats import mean_ci


def text(values: list[float]) -> str:
    ci = mean_ci(values)
    return f"{ci.mean:+.3f} ± {ci.half_width:.3f}" if ci.half_width is not None else f"{ci.mean:+.3f} (1 seed)"


def main(folders: list[Path]) -> None:
    runs: dict[int, dict[int, dict]] = defaultdict(dict)  # out_dim -> seed -> metrics
    for path in sorted(p for folder in folders for p in folder.glob("**/results.json")):
        result = json.loads(path.read_text())
        if result.get("status") == "finished":
            config = result["config"]
            runs[int(config["net"]["out_dim"])][int(config["seed"])] = result["metrics"]
    if not runs:
        raise SystemExit(f"no finished runs (results.json) under {', '.join(map(str, folders))}")
    smallest = min(runs)
    gains_by_seed: dict[int, list[float]] = defaultdict(list)
    print(f"| K | seeds | val kNN top-1 | gain over init (paired) | vs K={smallest} (paired) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for out_dim in sorted(runs):
        seeds = sorted(runs[out_dim])
        top1 = [runs[out_dim][s]["val/knn_top1"] for s in seeds]
        gains = [runs[out_dim][s].get("val/knn_top1_gain", runs[out_dim][s]["val/knn_top1"]
                                      - runs[out_dim][s]["val/knn_top1_init"]) for s in seeds]
        for seed, gain in zip(seeds, gains):
            gains_by_seed[seed].append(gain)
        paired = [runs[out_dim][s]["val/knn_top1"] - runs[smallest][s]["val/knn_top1"]
                  for s in seeds if s in runs[smallest]]
        print(f"| {out_dim} | {len(seeds)} | {text(top1)[1:]} | {text(gains)} | "
              f"{text(paired) if out_dim != smallest else '—'} |")
    # the runs of one seed share their initial backbone and queries: one value per seed, not per run
    per_seed = [sum(g) / len(g) for g in gains_by_seed.values()]
    print(f"\nevery K: gain over init {text(per_seed)} (mean over K per seed, {len(per_seed)} seeds)")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]] or [Path("runs/dino_head_dim")])

"""Closed-set face identification with a rejection threshold: pure tensor code, no models.

A probe is compared with every gallery image by cosine similarity of L2-normalised embeddings;
its prediction is the identity of the most similar gallery image, or "unknown" when even that
similarity is below the threshold (an operator would rather get no answer than a wrong one).
Every probe then lands in exactly one of: correct, unknown, wrong, so the three rates sum to 1,
and a threshold sweep shows the trade between unknowns and wrong answers.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from featlab.files import atomic_open, save_figure

UNKNOWN = -1
UNKNOWN_NAME = "unknown"
CSV_COLUMNS = ("probe", "true_id", "predicted_id", "similarity", "correct")


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit-length rows; face embeddings (EdgeFace included) come un-normalised from the network."""
    return F.normalize(x.float(), dim=-1, eps=eps)


def cosine_similarity_matrix(probes: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """``(P, D) x (G, D) -> (P, G)`` cosine similarities."""
    return l2_normalize(probes) @ l2_normalize(gallery).T


def embed_with_flip(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    use_tta: bool) -> torch.Tensor:
    """Unit embeddings, optionally the renormalised mean over the image and its mirror (flip TTA).

    Each view is normalised before averaging so neither dominates through its norm alone.
    """
    emb = l2_normalize(embed(images))
    if use_tta:
        emb = l2_normalize(emb + l2_normalize(embed(torch.flip(images, dims=[-1]))))
    return emb


def best_match(similarity: torch.Tensor, gallery_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label and similarity of each probe's most similar gallery image (several images per identity allowed)."""
    best_sim, best_idx = similarity.max(dim=1)
    return gallery_labels.to(best_idx.device)[best_idx], best_sim


def predict(best_label: torch.Tensor, best_sim: torch.Tensor, threshold: float) -> torch.Tensor:
    """The matched label, or :data:`UNKNOWN` where the best similarity is below ``threshold``."""
    return torch.where(best_sim >= threshold, best_label, torch.full_like(best_label, UNKNOWN))


@dataclass(frozen=True)
class IdentificationScores:
    """Fractions of probes that were identified correctly, rejected as unknown, or misidentified."""

    accuracy: float
    unknown_rate: float
    wrong_rate: float
    count: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def score(predicted: torch.Tensor, true: torch.Tensor) -> IdentificationScores:
    n = int(true.numel())
    if n == 0:
        return IdentificationScores(math.nan, math.nan, math.nan, 0)
    true = true.to(predicted.device)
    unknown = predicted == UNKNOWN
    correct = (predicted == true) & ~unknown
    return IdentificationScores(
        accuracy=correct.float().mean().item(),
        unknown_rate=unknown.float().mean().item(),
        wrong_rate=(~correct & ~unknown).float().mean().item(),
        count=n,
    )


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (e.g. accuracy over ``n`` probes).

    Why Wilson and not ``p ± z sqrt(p(1-p)/n)``: the normal approximation collapses to zero width
    at 0 or n successes and leaves [0, 1] near them; the score interval keeps its coverage there,
    which matters for the small probe sets of offline studies. It is the interval of the probe
    *sample* only: training noise across seeds comes on top.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes} of {n}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Identification:
    """Per-probe outcome of one identification run, kept for sweeps and CSV dumps."""

    true: torch.Tensor
    matched: torch.Tensor
    similarity: torch.Tensor
    predicted: torch.Tensor
    scores: IdentificationScores


def identify(probe_emb: torch.Tensor, probe_labels: torch.Tensor, gallery_emb: torch.Tensor,
             gallery_labels: torch.Tensor, threshold: float) -> Identification:
    """Identify every probe against the gallery at one threshold."""
    matched, similarity = best_match(cosine_similarity_matrix(probe_emb, gallery_emb), gallery_labels)
    predicted = predict(matched, similarity, threshold)
    return Identification(probe_labels, matched, similarity, predicted, score(predicted, probe_labels))


def threshold_grid(start: float = 0.25, stop: float = 0.45, step: float = 0.05) -> list[float]:
    """``start..stop`` inclusive, rounded so 0.1 + 0.2 style drift never drops the last threshold."""
    if step <= 0 or stop < start:
        return [round(start, 6)]
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    return [round(start + i * step, 6) for i in range(count)]


def threshold_sweep(result: Identification, thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Scores at each threshold; matching does not depend on the threshold, so no recomputation."""
    rows = []
    for t in thresholds:
        scores = score(predict(result.matched, result.similarity, t), result.true)
        rows.append({"threshold": float(t), "accuracy": scores.accuracy, "unknown_rate": scores.unknown_rate,
                     "wrong_rate": scores.wrong_rate})
    return rows


def sweep_markdown(sweeps: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """One markdown table with a block of columns per method (e.g. dsr and bicubic)."""
    methods = list(sweeps)
    header = ["threshold"] + [f"{m} {c}" for m in methods for c in ("acc", "unknown", "wrong")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    first = sweeps[methods[0]]
    for i, row in enumerate(first):
        cells = [f"{row['threshold']:.2f}"]
        for m in methods:
            r = sweeps[m][i]
            cells += [f"{r['accuracy']:.3f}", f"{r['unknown_rate']:.3f}", f"{r['wrong_rate']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(sweeps: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path,
               threshold: float | None = None) -> Path:
    """Accuracy (solid) and unknown rate (dashed) against the threshold, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for i, (method, rows) in enumerate(sweeps.items()):
        xs = [r["threshold"] for r in rows]
        color = f"C{i}"
        ax.plot(xs, [r["accuracy"] for r in rows], "-o", color=color, label=f"{method} accuracy")
        ax.plot(xs, [r["unknown_rate"] for r in rows], "--s", color=color, label=f"{method} unknown rate")
    if threshold is not None:
        ax.axvline(threshold, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("fraction of probes")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path


def write_predictions_csv(path: str | Path, result: Identification, names: Sequence[str] | None = None,
                          probes: Sequence[int] | None = None) -> Path:
    """One row per probe: its index, true id, predicted id (``unknown`` when rejected), similarity, correct.

    ``probes`` are the probes' dataset indices (default: row numbers); they let two runs tested on
    the same probe set be compared probe by probe (a paired comparison).
    """

    def name(label: int) -> str:
        label = int(label)
        if label == UNKNOWN:
            return UNKNOWN_NAME
        return names[label] if names is not None else str(label)

    path = Path(path)
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        index = list(probes) if probes is not None else list(range(int(result.true.numel())))
        rows = zip(index, result.true.tolist(), result.predicted.tolist(), result.similarity.tolist(), strict=True)
        for probe, true, pred, sim in rows:
            writer.writerow([int(probe), name(true), name(pred), f"{sim:.6f}", int(pred == true)])
    return path

"""Identification metrics against a hand-built gallery/probe example with known answers."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from featlab.metrics.identification import (
    CSV_COLUMNS,
    UNKNOWN,
    embed_with_flip,
    identify,
    l2_normalize,
    plot_sweep,
    sweep_markdown,
    threshold_grid,
    threshold_sweep,
    wilson_interval,
    write_predictions_csv,
)


def unit(i: int, dim: int = 5) -> torch.Tensor:
    return torch.eye(dim)[i]


def probe_at(identity: int, cosine: float) -> torch.Tensor:
    """A probe whose cosine with gallery vector ``identity`` is ``cosine`` and 0 with all others."""
    return cosine * unit(identity) + math.sqrt(1 - cosine**2) * unit(4)


@pytest.fixture
def example():
    # Gallery: identities 0, 1, 2 as orthogonal unit vectors (scaled: the metric must normalise).
    gallery = torch.stack([3 * unit(0), 0.5 * unit(1), 2 * unit(2)])
    gallery_labels = torch.tensor([0, 1, 2])
    # p0: identity 0 at 0.9 (always right); p1: identity 1 at 0.42 (right up to 0.42);
    # p2: identity 2 but closest to identity 0 at 0.32 (wrong up to 0.32); p3: identity 1 at 0.2 (unknown).
    probes = torch.stack([probe_at(0, 0.9), 7 * probe_at(1, 0.42), probe_at(0, 0.32), probe_at(1, 0.2)])
    probe_labels = torch.tensor([0, 1, 2, 1])
    return probes, probe_labels, gallery, gallery_labels


def test_scores_at_default_threshold(example):
    result = identify(*example, threshold=0.35)
    assert result.predicted.tolist() == [0, 1, UNKNOWN, UNKNOWN]
    assert result.similarity.tolist() == pytest.approx([0.9, 0.42, 0.32, 0.2], abs=1e-6)
    assert (result.scores.accuracy, result.scores.unknown_rate, result.scores.wrong_rate) == (0.5, 0.5, 0.0)
    assert result.scores.count == 4


def test_threshold_sweep_table(example):
    result = identify(*example, threshold=0.35)
    rows = threshold_sweep(result, threshold_grid(0.25, 0.45, 0.05))
    expected = {0.25: (0.5, 0.25, 0.25), 0.3: (0.5, 0.25, 0.25), 0.35: (0.5, 0.5, 0.0), 0.4: (0.5, 0.5, 0.0),
                0.45: (0.25, 0.75, 0.0)}
    assert [r["threshold"] for r in rows] == list(expected)
    for row in rows:
        assert (row["accuracy"], row["unknown_rate"], row["wrong_rate"]) == expected[row["threshold"]]
        assert row["accuracy"] + row["unknown_rate"] + row["wrong_rate"] == pytest.approx(1.0)
    table = sweep_markdown({"dsr": rows, "bicubic": rows})
    assert "| threshold | dsr acc |" in table and "| 0.45 | 0.250 | 0.750 | 0.000 |" in table


def test_best_of_several_gallery_images_per_identity():
    gallery = torch.stack([unit(0), unit(1), unit(2)])
    labels = torch.tensor([0, 1, 1])  # identity 1 has two gallery images
    probes = torch.stack([probe_at(2, 0.8), probe_at(1, 0.6)])
    result = identify(probes, torch.tensor([1, 1]), gallery, labels, threshold=0.5)
    assert result.predicted.tolist() == [1, 1]
    assert result.scores.accuracy == 1.0


def test_threshold_grid_keeps_the_end_point():
    assert threshold_grid(0.25, 0.45, 0.05) == [0.25, 0.3, 0.35, 0.4, 0.45]
    assert threshold_grid(0.3, 0.3, 0.05) == [0.3]


def test_flip_tta_changes_nothing_for_symmetric_inputs():
    torch.manual_seed(0)
    projection = torch.randn(3 * 6 * 6, 8)

    def embed(images: torch.Tensor) -> torch.Tensor:  # deliberately not flip-invariant
        return images.flatten(1) @ projection

    half = torch.rand(2, 3, 6, 3)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    assert torch.allclose(embed_with_flip(embed, symmetric, True), embed_with_flip(embed, symmetric, False), atol=1e-6)
    asymmetric = torch.rand(2, 3, 6, 6)
    assert not torch.allclose(embed_with_flip(embed, asymmetric, True), embed_with_flip(embed, asymmetric, False))
    assert torch.allclose(embed_with_flip(embed, asymmetric, True).norm(dim=-1), torch.ones(2))


def test_l2_normalize_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.allclose(l2_normalize(x), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))


def test_csv_dump_columns_and_rows(example, tmp_path):
    result = identify(*example, threshold=0.35)
    path = write_predictions_csv(tmp_path / "out" / "preds.csv", result, names=["ann", "bob", "cy"])
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS == ("probe", "true_id", "predicted_id", "similarity", "correct")
    assert rows[1] == ["0", "ann", "ann", "0.900000", "1"]
    assert rows[3][1:3] == ["cy", "unknown"] and rows[3][4] == "0"
    assert len(rows) == 5
    indexed = write_predictions_csv(tmp_path / "indexed.csv", result, probes=[7, 3, 9, 1])
    assert [row[0] for row in list(csv.reader(indexed.open()))[1:]] == ["7", "3", "9", "1"]


def test_wilson_interval_against_hand_computed_values():
    # 23 of 40: centre (p + z^2/2n) / (1 + z^2/n) = 0.56843, half-width 0.14648 (z = 1.959964), worked by hand
    low, high = wilson_interval(23, 40)
    assert low == pytest.approx(0.42195, abs=2e-5) and high == pytest.approx(0.71491, abs=2e-5)
    # 0 of 10: [0, z^2 / (n + z^2)] = [0, 3.8415 / 13.8415]; never a zero-width interval at the edge
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=2e-5)
    assert wilson_interval(10, 10)[0] == pytest.approx(1 - 0.27753, abs=2e-5)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))  # no probes, no interval
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_sweep_plot_is_written(example, tmp_path):
    rows = threshold_sweep(identify(*example, threshold=0.35), threshold_grid())
    path = plot_sweep({"dsr": rows, "bicubic": rows}, tmp_path / "sweep.png", threshold=0.35)
    assert path.read_bytes()[:4] == b"\x89PNG"

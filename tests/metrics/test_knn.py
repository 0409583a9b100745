"""Weighted kNN and the linear probe against hand-made examples."""

from __future__ import annotations

import math

import pytest
import torch

from featlab.metrics.knn import knn_accuracy, knn_scores, linear_probe_accuracy, topk_accuracy


def test_weighted_vote_by_hand():
    # bank on the unit circle at 0, 90, 180 degrees (classes 0, 1, 1); query at 30 degrees
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])   # scale must not matter (cosine)
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]])
    scores = knn_scores(bank, labels, query, num_classes=2, k=2, temperature=0.5)
    expected = torch.tensor([[math.exp(math.cos(math.pi / 6) / 0.5), math.exp(math.cos(math.pi / 3) / 0.5)]])
    assert torch.allclose(scores, expected, rtol=1e-5)
    # k=3 adds the opposite point (cos = -cos 30) to class 1
    scores3 = knn_scores(bank, labels, query, num_classes=2, k=3, temperature=0.5)
    assert torch.allclose(scores3[0, 1], expected[0, 1] + math.exp(-math.cos(math.pi / 6) / 0.5), rtol=1e-5)


def test_weights_beat_counts_and_k_is_capped_by_the_bank():
    """Two far neighbours of class 1 lose to one very close neighbour of class 0 at a low temperature."""
    bank = torch.tensor([[1.0, 0.01], [0.2, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_accuracy(bank, labels, query, torch.tensor([0]), 2, k=20, temperature=0.07)["top1"] == 1.0


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(scores, torch.tensor([2, 0, 0]), ks=(1, 2))
    assert acc == pytest.approx({"top1": 1 / 3, "top2": 2 / 3})


def test_linear_probe_separates_separable_classes():
    torch.manual_seed(0)
    centers = torch.randn(3, 8) * 4
    labels = torch.arange(60) % 3
    feats = centers[labels] + torch.randn(60, 8)
    acc = linear_probe_accuracy(feats[:45], labels[:45], feats[45:], labels[45:], 3, steps=100, lr=0.05)
    assert acc["top1"] == 1.0

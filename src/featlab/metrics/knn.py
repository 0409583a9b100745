"""Frozen-feature classifiers: DINO's weighted kNN and an optional linear probe.

Both read a backbone's quality off labelled features without fine-tuning it; the kNN needs no
training at all, so it can run every few epochs. Features are compared by cosine similarity
(L2-normalised dot products) and each of the k neighbours votes with weight ``exp(sim / T)``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from featlab.errors import require


def knn_scores(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
    k: int = 20, temperature: float = 0.07, chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores ``(Q, num_classes)``: sum of ``exp(cos / T)`` over each query's k nearest bank items.

    Queries are processed in chunks so the similarity matrix never holds more than
    ``chunk_size x len(bank)`` entries.
    """
    require(k >= 1, "callbacks.knn.k", f"must be >= 1, got {k}")
    require(temperature > 0, "callbacks.knn.temperature", f"must be positive, got {temperature}")
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    scores = []
    for start in range(0, queries.shape[0], chunk_size):
        q = F.normalize(queries[start:start + chunk_size].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        scores.append(votes.scatter_add_(1, bank_labels[idx], weights))
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the ``k`` best scores, for each ``k`` (capped at #classes)."""
    ranked = scores.argsort(dim=1, descending=True)
    hits = ranked == labels[:, None]
    return {f"top{k}": hits[:, :min(k, scores.shape[1])].any(1).float().mean().item() for k in ks}


def knn_accuracy(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor,
    num_classes: int, k: int = 20, temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1/top-5 accuracy of the weighted kNN vote."""
    return topk_accuracy(knn_scores(bank, bank_labels, queries, num_classes, k, temperature), query_labels)


def linear_probe_accuracy(
    train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
    num_classes: int, steps: int = 300, lr: float = 0.01, weight_decay: float = 1e-4, seed: int = 0,
) -> dict[str, float]:
    """Top-1/top-5 of a logistic-regression probe trained full-batch on standardised frozen features.

    Full-batch and seeded, so every DDP rank (holding the same gathered features) gets the same
    number without any communication.
    """
    mean, std = train.float().mean(0), train.float().std(0).clamp_min(1e-6)
    x_train, x_val = (train.float() - mean) / std, (val.float() - mean) / std
    generator = torch.Generator(device="cpu").manual_seed(seed)
    weight = (torch.randn(num_classes, x_train.shape[1], generator=generator) * 0.01).to(x_train.device)
    weight.requires_grad_(True)
    bias = torch.zeros(num_classes, device=x_train.device, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(F.linear(x_train, weight, bias), train_labels).backward()
            opt.step()
    with torch.no_grad():
        return topk_accuracy(F.linear(x_val, weight, bias), val_labels)

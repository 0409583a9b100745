"""Optimisers and schedules shared by every task.

DINO, SISR and DSR all use AdamW with warmup + cosine; keeping one implementation means one place
where 'no weight decay on biases and norms' and 'fused kernels on GPU' are decided.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from featlab.errors import ConfigError, require, unknown_name

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def cosine_value(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step >= total)."""
    if total <= 0 or step >= total:
        return end
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / total))


def warmup_cosine_value(step: int, warmup: int, total: int, peak: float, final: float, start: float = 0.0) -> float:
    """Linear warmup ``start -> peak`` over ``warmup`` steps, then cosine ``peak -> final`` until ``total``."""
    if step < warmup:
        return start + (peak - start) * step / max(1, warmup)
    return cosine_value(step - warmup, total - warmup, peak, final)


def decay_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two parameter groups: weights with decay, and biases / norm scales (ndim <= 1) without.

    Decaying norm gains and biases only shrinks them towards zero, which hurts ViTs; DINO and most
    SR recipes exclude them. Each group carries ``apply_wd`` so per-step weight-decay schedules
    know which group to touch.
    """
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "apply_wd": True}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "apply_wd": False})
    return [g for g in groups if g["params"]]


def _number(value, key: str) -> float:
    """``value`` as a float, or one line naming ``key`` (``task.optim.lr=abc`` arrives as a string)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number, got {value!r}") from None


def build_optimizer(
    module: nn.Module | Iterable[tuple[str, nn.Parameter]],
    name: str = "adamw",
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """Build an optimiser over the trainable parameters, fused on CUDA unless ``fused=False``."""
    lr, weight_decay, momentum = (_number(v, f"task.optim.{k}") for k, v in
                                  (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum)))
    require(lr > 0, "task.optim.lr", f"must be positive, got {lr}")
    named = module.named_parameters() if isinstance(module, nn.Module) else module
    groups = decay_groups(named, weight_decay)
    require(bool(groups), "task.optim", "the model has no trainable parameters")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    use_fused = on_cuda if fused is None else (fused and on_cuda)
    name = name.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=use_fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), fused=use_fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=use_fused)
    raise unknown_name("task.optim.name", name, OPTIMIZERS, "optimizer")


def build_lr_lambda(
    kind: str, total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0,
    milestones: Iterable[int] = (), gamma: float = 0.5,
):
    """A per-step multiplier of the base learning rate for ``torch.optim.lr_scheduler.LambdaLR``."""
    kind = kind.lower()
    if kind not in SCHEDULES:
        raise unknown_name("task.scheduler.kind", kind, SCHEDULES, "schedule")
    require(warmup_steps < max(total_steps, 1) or kind == "constant", "task.scheduler.warmup",
            f"warmup ({warmup_steps} steps) must be shorter than training ({total_steps} steps)")
    marks = sorted(milestones)

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        if kind == "step":
            return gamma ** sum(step >= m for m in marks)
        warm = warmup_steps if kind == "warmup_cosine" else 0
        return warmup_cosine_value(step, warm, total_steps, 1.0, min_factor, start=0.0 if warm else 1.0)

    return factor

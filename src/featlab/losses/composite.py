"""A weighted sum of named loss terms, built from a config dict.

Loss configs are ``{term: {_target_: ..., weight: w, ...}}`` so that a sweep can address one
weight (``loss.perceptual.weight=0.5``) or one term's option (``loss.perceptual.layers=[...]``),
and a term is switched off with ``loss.perceptual=null`` or weight 0.

On the first batch every weighted term is checked (``loss.scale_check``: ``warn`` by default,
``error`` or ``off``): a term that is not finite, or more than ``SCALE_LIMIT`` times every other term,
means a weight or normalisation is wrong, and the message names the term and both magnitudes before
training goes on (``warn``) or stops (``error``). The first batch's magnitudes are logged either way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from featlab.config import build
from featlab.errors import ConfigError

log = logging.getLogger(__name__)

SCALE_CHECKS = ("warn", "error", "off")
SCALE_LIMIT = 1000.0


def scale_problems(values: Mapping[str, float], limit: float = SCALE_LIMIT) -> list[str]:
    """Human-readable problems among the weighted terms' first-batch magnitudes (empty if none)."""
    problems = [f"loss term '{name}' is {value} on the first batch (weight loss.{name}.weight)"
                for name, value in values.items() if not math.isfinite(value)]
    finite = {name: abs(value) for name, value in values.items() if math.isfinite(value)}
    for name, value in finite.items():
        others = {other: v for other, v in finite.items() if other != name}
        if not others:
            continue
        largest = max(others, key=others.get)  # a term 1000x ALL the others drowns them
        if others[largest] > 0 and value > limit * others[largest]:
            problems.append(f"loss term '{name}' = {value:.4g} is {value / others[largest]:.3g}x '{largest}' "
                            f"= {others[largest]:.4g} (the largest other term) on the first batch (limit "
                            f"{limit:g}x); lower loss.{name}.weight or check its normalisation")
    return problems


class CompositeLoss(nn.Module):
    """Sum of ``weight * term(pred, target)`` over named terms; returns the total and each weighted term."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float], scale_check: str = "warn") -> None:
        super().__init__()
        if not terms:
            raise ConfigError("loss", "no loss term is enabled; give at least one term a non-zero weight")
        if scale_check not in SCALE_CHECKS:
            raise ConfigError("loss.scale_check", f"must be one of {', '.join(SCALE_CHECKS)}, got '{scale_check}'")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(weights)
        self.scale_check = scale_check
        self.first_batch_scales: dict[str, float] | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> CompositeLoss:
        # Resolve in place: a node cut from its root would lose interpolations like ${pretrained}.
        plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg or {})
        terms, weights = {}, {}
        plain = dict(plain or {})
        scale_check = str(plain.pop("scale_check", "warn"))
        for name, term_cfg in plain.items():
            if term_cfg is None:
                continue
            if not isinstance(term_cfg, dict) or "_target_" not in term_cfg:
                raise ConfigError(f"loss.{name}", "each loss term needs a _target_ and a weight")
            term_cfg = dict(term_cfg)
            weight = float(term_cfg.pop("weight", 1.0))
            if weight == 0.0:
                continue
            terms[name] = build(term_cfg)
            weights[name] = weight
        return cls(terms, weights, scale_check=scale_check)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: self.weights[name] * term(pred, target) for name, term in self.terms.items()}
        total = torch.stack([v.float() for v in values.values()]).sum()
        if self.first_batch_scales is None:
            self.check_scales(values)
        return total, values

    def check_scales(self, values: Mapping[str, torch.Tensor]) -> None:
        """Log the first batch's weighted terms; warn or stop on a non-finite or 1000x-off term."""
        self.first_batch_scales = {name: float(v.detach().float()) for name, v in values.items()}
        if len(values) > 1:
            log.info("loss terms on the first batch (weighted): %s",
                     ", ".join(f"{n} {v:.4g}" for n, v in self.first_batch_scales.items()))
        problems = scale_problems(self.first_batch_scales) if self.scale_check != "off" else []
        if problems and self.scale_check == "error":
            raise ConfigError("loss.scale_check", problems[0] + " (set loss.scale_check=warn to train anyway)")
        for problem in problems:
            log.warning(problem)

"""A weighted sum of named loss terms, built from a config dict.

Loss configs are ``{term: {_target_: ..., weight: w, ...}}`` so that a sweep can address one
weight (``loss.perceptual.weight=0.5``) or one term's option (``loss.perceptual.layers=[...]``),
and a term is switched off with ``loss.perceptual=null`` or weight 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from featlab.config import build
from featlab.errors import ConfigError


class CompositeLoss(nn.Module):
    """Sum of ``weight * term(pred, target)`` over named terms; returns the total and each weighted term."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("loss", "no loss term is enabled; give at least one term a non-zero weight")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(weights)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> CompositeLoss:
        # Resolve in place: a node cut from its root would lose interpolations like ${pretrained}.
        plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg or {})
        terms, weights = {}, {}
        for name, term_cfg in plain.items():  # type: ignore[union-attr]
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
        return cls(terms, weights)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: self.weights[name] * term(pred, target) for name, term in self.terms.items()}
        total = torch.stack([v.float() for v in values.values()]).sum()
        return total, values


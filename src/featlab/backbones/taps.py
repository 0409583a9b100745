"""The layer-tap plan: how one model family names its layers, truncates itself and runs one pass.

A plan is read off the full model (``registry.register_kind(kind, factory)`` maps a backbone kind
to ``factory(model) -> TapPlan``); the extractor then only ever talks to the plan. featlab's plans:
:class:`featlab.backbones.vit.ViTTaps` (timm VisionTransformers, through timm's
``forward_intermediates``) and :class:`featlab.backbones.staged.StagedTaps` (convnets as a chain of
named steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn


class TapPlan(Protocol):
    """Names, truncation and the single forward pass of one model family."""

    family: str  # "vit" | "cnn" | "vgg": what the layer names look like
    embed_layer: str  # the layer ``global_features`` returns ("cls" or "pool")
    valid_layers: tuple[str, ...]  # every name a user may request, in depth order
    embed_dim: int  # channels of ``embed_layer``
    patch_size: int | None  # ViTs: inputs must be multiples of it; convnets: None

    def can_compute(self, layer: str) -> bool:
        """Whether ``layer`` survived truncation."""

    def prune(self, model: nn.Module, layers: Sequence[str]) -> None:
        """Truncate ``model`` in place after the deepest of ``layers``."""

    def run(self, model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """One pass over normalised pixels, returning ``{layer: features}`` in request order."""

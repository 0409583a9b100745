"""A frozen backbone's feature distance on held-out images, the same for every run it compares.

Why: a perceptual-loss run and an L1-only run cannot be compared on their validation losses (the
two losses differ), and LPIPS needs weights an offline machine may not have. This scorer measures
every run with one fixed criterion: :class:`featlab.losses.perceptual.PerceptualLoss` (same keys:
backbone, layers, layer_weights, distance, normalize, ...) applied to each image on its own,
under the SR evaluation protocol of LPIPS (RGB, 8-bit quantised, ``crop_border`` pixels cropped).
Lower is better. When its backbone and layers are those a run was trained on, it is that run's
own criterion: a check that training did what it was asked, not evidence of perceived quality.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from featlab.errors import ConfigError
from featlab.losses.perceptual import PerceptualLoss
from featlab.metrics.sr import PEAK, _prepare


class FeatureDistance(nn.Module):
    """Per-image feature distance of ``(B, 3, H, W)`` images in [0, ``data_range``], ``(B,)``; frozen."""

    def __init__(self, distance: PerceptualLoss) -> None:
        super().__init__()
        self.distance = distance.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, data_range: float = 1.0,
                quantize: bool = True) -> torch.Tensor:
        a, b = _prepare(sr, hr, crop_border, data_range, quantize, y_channel=False)
        self.distance.to(sr.device)
        # one image at a time: normalize=target divides by the target's own magnitude, not the batch's
        values = [self.distance((x / PEAK).float()[None], (y / PEAK).float()[None]) for x, y in zip(a, b)]
        return torch.stack(values).reshape(-1).float()


def build_feature_distance(config: Mapping[str, Any] | None,
                           key: str = "task.eval_feature_distance") -> FeatureDistance | None:
    """The scorer from PerceptualLoss keys (``weight`` is ignored: a metric has none); None when off."""
    if not config:
        return None
    options = {k: v for k, v in dict(config).items() if k not in ("_target_", "weight")}
    if "backbone" not in options or "layers" not in options:
        raise ConfigError(key, "needs backbone and layers (e.g. backbone: efficientnet_lite0, layers: [stages.1])")
    try:
        return FeatureDistance(PerceptualLoss(**options, config_key=key))
    except TypeError as err:
        raise ConfigError(key, f"takes PerceptualLoss's keys: {err}") from None

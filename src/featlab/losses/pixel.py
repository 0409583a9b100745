"""Pixel-space reconstruction losses: L1, Charbonnier (a smooth L1 that SR papers prefer), MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featlab.errors import unknown_name

PIXEL_KINDS = ("l1", "charbonnier", "mse")


class PixelLoss(nn.Module):
    """Mean per-pixel distance between prediction and target; ``eps`` is Charbonnier's smoothing."""

    def __init__(self, kind: str = "l1", eps: float = 1e-3) -> None:
        super().__init__()
        if kind not in PIXEL_KINDS:
            raise unknown_name("loss.pixel.kind", kind, PIXEL_KINDS, "pixel loss kind")
        self.kind = kind
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "l1":
            return F.l1_loss(pred, target)
        if self.kind == "mse":
            return F.mse_loss(pred, target)
        diff = pred - target
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()

    def extra_repr(self) -> str:
        return f"kind={self.kind}" + (f", eps={self.eps}" if self.kind == "charbonnier" else "")

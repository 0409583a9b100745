"""Total variation: a smoothness prior that damps high-frequency artefacts of feature losses."""

from __future__ import annotations

import torch
from torch import nn


class TVLoss(nn.Module):
    """Anisotropic TV: mean |vertical difference| + mean |horizontal difference| of ``pred``.

    ``target`` is accepted and ignored so the term fits the ``loss(pred, target)`` interface.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        vertical = (pred[..., 1:, :] - pred[..., :-1, :]).abs().mean()
        horizontal = (pred[..., :, 1:] - pred[..., :, :-1]).abs().mean()
        return vertical + horizontal

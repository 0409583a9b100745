"""Slot decoders: turn a set of slots back into a feature map plus one mask per slot.

The MLP broadcast decoder follows DINOSAUR (Seitzer et al., 2023): every slot is copied to every
patch position, a learned positional embedding is added, and a shared MLP predicts that slot's
feature vector and an alpha logit at that position. A softmax over slots turns the alpha logits
into masks, and the reconstruction is the mask-weighted sum of the slots' features. Because each
position is decoded independently, the only way to reconstruct well is to let different slots
own different regions, which is where the object masks come from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from featlab.errors import require
from featlab.nets.slot_attention import mlp


class MLPBroadcastDecoder(nn.Module):
    """Decode (B, K, D) slots into features (B, N, F) and masks (B, K, N) over N positions.

    Args:
        slot_dim: D.
        feature_dim: F, channels of the feature map to reconstruct.
        num_positions: N, positions of the (flattened) feature grid.
        hidden_dims: hidden widths of the shared MLP; DINOSAUR uses three of 1024 (4 layers).
        pos_init_std: std of the initial positional embedding. DINOSAUR's 0.02 starts position
            small next to the slot and lets long training grow it; the few-thousand-step slots
            control starts it at the slots' scale (1.0, see experiments/slot_backbones/README.md).
    """

    def __init__(self, slot_dim: int, feature_dim: int, num_positions: int,
                 hidden_dims: Sequence[int] = (1024, 1024, 1024), pos_init_std: float = 0.02) -> None:
        super().__init__()
        require(num_positions >= 1, "task.grid_size", f"the grid must have positions, got {num_positions}")
        require(pos_init_std >= 0, "task.decoder.pos_init_std", f"must be >= 0, got {pos_init_std}")
        self.feature_dim = feature_dim
        self.num_positions = num_positions
        self.pos_embed = nn.Parameter(torch.randn(1, 1, num_positions, slot_dim) * pos_init_std)
        self.mlp = mlp(slot_dim, list(hidden_dims), feature_dim + 1)

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(reconstruction (B, N, F), masks (B, K, N), per-slot features (B, K, N, F))``."""
        broadcast = slots.unsqueeze(2) + self.pos_embed  # (B, K, N, D)
        out = self.mlp(broadcast)
        features, alpha = out[..., : self.feature_dim], out[..., self.feature_dim]
        masks = alpha.softmax(dim=1)  # slots compete for every position
        reconstruction = (masks.unsqueeze(-1) * features).sum(dim=1)
        return reconstruction, masks, features

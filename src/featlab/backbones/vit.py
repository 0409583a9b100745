"""Layer taps for timm VisionTransformers (DINO, DINOv2, CLIP and the test size).

Tap point, the same for every ViT so studies compare like with like:

- ``block{i}`` is the residual stream right after block ``i`` (before any norm); ``feat1..feat4``
  are aliases for the last block of each quarter, block ``ceil(q * N / 4) - 1`` (2/5/8/11 for 12
  blocks). Patch tokens are reshaped to the patch grid, ``(B, C, H/p, W/p)``.
- ``last`` is the final LayerNorm (timm ``model.norm``; CLIP's ``ln_post``) applied to the patch
  tokens, as a grid; ``cls`` is the final-normed CLS token ``(B, C)``.

The pass and the truncation are timm's public intermediate-feature API
(``forward_intermediates``, ``prune_intermediate_layers``), so any timm VisionTransformer that
implements it works. Grids come back as a permuted view whose memory is NHWC (channels_last), so
no copy is made; use ``reshape`` rather than ``view`` on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def quarter_ends(num_blocks: int) -> list[int]:
    """Index of the last block of each quarter of the depth."""
    return [math.ceil(q * num_blocks / 4) - 1 for q in (1, 2, 3, 4)]


class ViTTaps:
    """Names, truncation and the single forward pass for one timm VisionTransformer."""

    family = "vit"
    embed_layer = "cls"

    def __init__(self, model: nn.Module) -> None:
        self.num_blocks = len(model.blocks)
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.num_prefix = int(model.num_prefix_tokens)
        self.has_cls = getattr(model, "cls_token", None) is not None
        self.embed_dim = int(model.embed_dim)
        self.alias = {f"feat{q + 1}": f"block{e}" for q, e in enumerate(quarter_ends(self.num_blocks))}
        blocks = [f"block{i}" for i in range(self.num_blocks)]
        self.valid_layers = (*blocks, *self.alias, "last", *(("cls",) if self.has_cls else ()))
        self.kept_blocks = self.num_blocks
        self.has_norm = True

    def _depth(self, layer: str) -> int:
        """Blocks needed for ``layer``; ``num_blocks + 1`` means the final norm too."""
        layer = self.alias.get(layer, layer)
        if layer in ("last", "cls"):
            return self.num_blocks + 1
        return int(layer[len("block") :]) + 1

    def can_compute(self, layer: str) -> bool:
        depth = self._depth(layer)
        return depth <= self.kept_blocks or (depth == self.num_blocks + 1 and self.has_norm)

    def prune(self, model: nn.Module, layers: Sequence[str]) -> None:
        """Drop blocks after the deepest requested layer, the final norm unless needed, and the head."""
        depth = max(self._depth(layer) for layer in layers)
        self.kept_blocks = min(depth, self.num_blocks)
        self.has_norm = depth > self.num_blocks
        model.prune_intermediate_layers([self.kept_blocks - 1], prune_norm=not self.has_norm, prune_head=True)
        if getattr(model, "attn_pool", None) is not None:  # a MAP head pools the tokens; taps never use it
            model.attn_pool = None

    def run(self, model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """One pass (timm's ``forward_intermediates``) through the blocks the deepest layer needs."""
        batch, _, height, width = x.shape
        grid = (height // self.patch_size, width // self.patch_size)
        wanted = {self.alias.get(layer, layer) for layer in layers}
        blocks = sorted(int(layer[len("block") :]) for layer in wanted if layer.startswith("block"))
        needs_end = max(self._depth(layer) for layer in layers) > self.num_blocks
        # timm needs at least one index; without block taps, the last block's output is taken and unused
        indices = blocks or [len(model.blocks) - 1]
        if needs_end:
            final, tokens = model.forward_intermediates(x, indices=indices, output_fmt="NLC")
        else:
            tokens = model.forward_intermediates(x, indices=indices, output_fmt="NLC", stop_early=True,
                                                 intermediates_only=True)
        found = {f"block{index}": self._grid(t, batch, grid) for index, t in zip(blocks, tokens)}
        if needs_end:
            found["last"] = self._grid(final[:, self.num_prefix :], batch, grid)
            if self.has_cls:
                found["cls"] = final[:, 0]
        return {layer: found[self.alias.get(layer, layer)] for layer in layers}

    @staticmethod
    def _grid(patches: torch.Tensor, batch: int, grid: tuple[int, int]) -> torch.Tensor:
        """Patch tokens ``(B, N, C)`` (prefix tokens already removed) as a ``(B, C, H, W)`` view."""
        return patches.reshape(batch, grid[0], grid[1], patches.shape[-1]).permute(0, 3, 1, 2)

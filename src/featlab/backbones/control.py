"""``patch_rgbxy_control``: a parameter-free "backbone" of patch mean colour and patch position.

It is meant as a POSITIVE CONTROL, not a feature extractor anyone would study: on the embedded 2D
scenes (saturated flat-coloured shapes over muted textured backgrounds) colour and position are
enough to tell objects apart, so slot attention on these five channels should segment if the slot
pipeline (normalisation, slot module, decoder, FG-ARI) works. With the mixture-model decoder of
``experiment=slots_control`` it does, clearly above a fixed spatial split of the same scenes
(experiments/slot_backbones/README.md "Positive control").

Per ``patch`` x ``patch`` cell of the input it returns the mean R, G, B (pixels in [0, 1]: mean 0
and std 1 are its pixel "normalisation", so the colours reach the task unchanged) and the cell
centre's (y, x) in [-1, 1]. The position channels matter: convolution-free colour features carry
no position, and a slot that cannot tell where its pixels are cannot be decoded into a mask.
The only tap is ``last`` (``pool``: the image mean). ``pretrained=false``: it has no weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featlab.backbones.registry import register_backbone, register_kind
from featlab.backbones.staged import StagedTaps, Step
from featlab.errors import require

CONTROL_NAME = "patch_rgbxy_control"
CONTROL_PATCH = 8  # 128 px scenes -> a 16x16 grid, the slots task's default grid


class PatchColourPosition(nn.Module):
    """(B, 3, H, W) -> (B, 5, H/patch, W/patch): mean RGB per cell, then the cell centre's (y, x)."""

    num_features = 5

    def __init__(self, patch: int = CONTROL_PATCH, **_: Any) -> None:
        """``**_`` takes the options the factory passes to every builder (``num_classes``), unused here."""
        super().__init__()
        require(patch >= 1, "task.backbone.patch", f"must be >= 1, got {patch}")
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        colour = F.avg_pool2d(x, self.patch)
        rows, cols = colour.shape[-2:]
        ys = (torch.arange(rows, device=x.device, dtype=x.dtype) + 0.5) / rows * 2 - 1
        xs = (torch.arange(cols, device=x.device, dtype=x.dtype) + 0.5) / cols * 2 - 1
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(x.shape[0], -1, -1, -1)
        return torch.cat([colour, grid], dim=1)


def control_taps(model: nn.Module) -> StagedTaps:
    """One step, ``last``; the module itself is the step (path ``""``)."""
    return StagedTaps("cnn", [Step("last", ("",))], {}, "last", None, int(model.num_features))


register_kind("patch_control", control_taps)
register_backbone(
    CONTROL_NAME,
    "patch_control",
    PatchColourPosition,
    input_size=CONTROL_PATCH * 16,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    description="POSITIVE CONTROL (slots): mean RGB + (y, x) per 8x8 patch, no weights (pretrained=false)",
)

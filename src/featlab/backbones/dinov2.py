"""DINOv2 computed as the official code computes it, on timm's VisionTransformer.

timm builds the network, so its intermediate-feature API, truncation and pretrained cache apply as for
every other ViT. Two things differ from facebookresearch/dinov2 and are replaced here:

- **Position embeddings.** The official model keeps the grid it was trained on (37x37 for 518 px) and
  resamples it at every forward for the input's grid, bicubic. The original hub models do it *without*
  antialias and with a scale factor of ``(grid + 0.1) / 37`` rather than the target size (a kludge kept
  from DINO for backward compatibility); the register models use antialias and the exact size. timm
  resamples with antialias to the exact size, so at 224 px its features differ from the official ones
  by ~0.1. Here the model keeps its checkpoint's grid and resamples exactly as the official
  ``interpolate_pos_encoding`` does.
- **Hub files.** ``dinov2_vits14_pretrain.pth`` holds ``mask_token`` (only masked training uses it) and,
  for register models, ``register_tokens`` with a position embedding that covers the CLS token but not
  the registers; training checkpoints with ``block_chunks`` name blocks ``blocks.<chunk>.<index>``;
  ViT-g's fused SwiGLU is ``mlp.w12``/``mlp.w3`` where timm's packed GLU has ``mlp.fc1``/``mlp.fc2``.
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from featlab.backbones.registry import BackboneSpec, register_backbone

#: The hub's two resampling settings: (antialias, offset).
ORIGINAL_RESAMPLING = (False, 0.1)
REGISTER_RESAMPLING = (True, 0.0)
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")
_SWIGLU = {".mlp.w12.": ".mlp.fc1.", ".mlp.w3.": ".mlp.fc2."}  # ViT-g's fused SwiGLU as timm's packed GLU


def resample_patch_positions(patch_pos: torch.Tensor, grid: tuple[int, int], antialias: bool,
                             offset: float) -> torch.Tensor:
    """The official ``interpolate_pos_encoding`` for the patch part ``(1, M*M, C)`` of the embedding.

    With an ``offset`` the *scale factor* ``(grid + offset) / M`` is what the kernel samples with (the
    output size is its floor, i.e. ``grid``); without one the exact size is asked for. The trained grid
    itself is returned unchanged, as the official code does.
    """
    side = math.isqrt(patch_pos.shape[1])
    if grid == (side, side):
        return patch_pos
    dim = patch_pos.shape[-1]
    square = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if offset:
        sampling: dict[str, Any] = {"scale_factor": ((grid[0] + offset) / side, (grid[1] + offset) / side)}
    else:
        sampling = {"size": grid}
    resampled = F.interpolate(square, mode="bicubic", antialias=antialias, **sampling)
    return resampled.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)


class DinoV2VisionTransformer(VisionTransformer):
    """timm's ViT with DINOv2's position-embedding resampling (see the module docstring).

    Built by timm (``timm.create_model`` and its pretrained loader) and then adopted, so nothing of
    timm's construction is repeated here; only ``_pos_embed`` differs.
    """

    interpolate_antialias: bool = ORIGINAL_RESAMPLING[0]
    interpolate_offset: float = ORIGINAL_RESAMPLING[1]

    @classmethod
    def adopt(cls, model: nn.Module, antialias: bool, offset: float) -> DinoV2VisionTransformer:
        if not isinstance(model, VisionTransformer) or not model.dynamic_img_size:
            raise TypeError("DINOv2 resampling needs a timm VisionTransformer built with dynamic_img_size=True")
        model.__class__ = cls
        model.interpolate_antialias, model.interpolate_offset = antialias, offset
        return model

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Prefix tokens, then position embeddings added as the official ``prepare_tokens_with_masks``."""
        batch, height, width, dim = x.shape  # patch tokens as a grid (dynamic_img_size)
        prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        with_prefix = 0 if self.no_embed_class else self.num_prefix_tokens  # positions held for prefix tokens
        patch_pos = resample_patch_positions(self.pos_embed[:, with_prefix:], (height, width),
                                             self.interpolate_antialias, self.interpolate_offset)
        x = x.reshape(batch, height * width, dim)
        if self.no_embed_class:  # registers carry no position; a CLS position was folded into cls_token
            x = torch.cat([*prefix, x + patch_pos.to(x.dtype)], dim=1)
        else:
            pos = torch.cat([self.pos_embed[:, :with_prefix].float(), patch_pos.float()], dim=1)
            x = torch.cat([*prefix, x], dim=1) + pos.to(x.dtype)
        return self.pos_drop(x)


def convert_hub_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official DINOv2 keys onto the timm module; the model keeps the file's position grid.

    The position embedding is resampled at every forward (never at load, which would lose the exact
    official values), so when the file's grid differs from the one the model was built with, the
    parameter takes the file's shape.
    """
    state = {_hub_key(k): v for k, v in state.items() if k != "mask_token"}
    if "register_tokens" in state:
        state["reg_token"] = state.pop("register_tokens")
        if getattr(model, "no_embed_class", False) and "pos_embed" in state and "cls_token" in state:
            pos = state["pos_embed"]  # (1, 1 + M*M, C): the CLS position is constant, fold it into the token
            state["cls_token"] = state["cls_token"] + pos[:, :1]
            state["pos_embed"] = pos[:, 1:]
    own = getattr(model, "pos_embed", None)
    file_pos = state.get("pos_embed")
    if isinstance(own, nn.Parameter) and file_pos is not None and file_pos.shape != own.shape \
            and file_pos.dim() == 3 and file_pos.shape[-1] == own.shape[-1]:
        model.pos_embed = nn.Parameter(torch.zeros_like(file_pos, device=own.device, dtype=own.dtype),
                                       requires_grad=own.requires_grad)
    return state


def _hub_key(key: str) -> str:
    key = _CHUNKED_BLOCK.sub(r"blocks.\1.", key)
    for official, timm_name in _SWIGLU.items():
        key = key.replace(official, timm_name)
    return key


def register_dinov2(name: str, arch: str, registers: bool = False, **options: Any) -> BackboneSpec:
    """A DINOv2 backbone: timm's ``arch``, the official resampling, hub files readable as checkpoints."""
    antialias, offset = REGISTER_RESAMPLING if registers else ORIGINAL_RESAMPLING
    return register_backbone(
        name,
        "vit",
        arch,
        finish=partial(DinoV2VisionTransformer.adopt, antialias=antialias, offset=offset),
        convert_state_dict=convert_hub_state_dict,
        **options,
    )

"""Backbone + DINO head as one network: the student, and (an EMA copy of it) the teacher.

Crops of one resolution go through the backbone in a single call (2 global crops together, all
local crops together), and the head runs once on everything; this is both DINO's multi-crop
wrapper and the cheapest way to run it on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from featlab.backbones import FeatureExtractor, create
from featlab.nets.dino_head import DINOHead


class DINOModel(nn.Module):
    """``forward(crops)`` -> projections ``(sum of batch sizes, out_dim)`` in crop order."""

    def __init__(self, backbone: FeatureExtractor, head: DINOHead, channels_last: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.channels_last = channels_last

    @classmethod
    def from_config(
        cls,
        backbone: str = "dino_vits16",
        pretrained: bool = False,
        checkpoint: str | None = None,
        out_dim: int = 4096,
        hidden_dim: int = 1024,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        use_bn: bool = False,
        drop_path_rate: float = 0.0,
        channels_last: bool = False,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> DINOModel:
        """Build from the ``net`` config: any backbone the registry knows, trainable, fed unresized crops.

        Crops are not resized to the backbone's native grid (96-pixel local crops stay 96 pixels);
        ViTs interpolate their position embeddings to each crop's grid.
        """
        kwargs = dict(backbone_kwargs or {})
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        # config_key "net": the layer's errors then name net.pretrained / net.checkpoint, our keys
        fx = create(backbone, layers=["last"], pretrained=pretrained, checkpoint=checkpoint, trainable=True,
                    resize=False, config_key="net", name_key="net.backbone", **kwargs)
        head = DINOHead(fx.embed_dim, out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                        norm_last_layer=norm_last_layer, use_bn=use_bn)
        if channels_last:
            fx.to(memory_format=torch.channels_last)
        return cls(fx, head, channels_last=channels_last and fx.family != "vit")

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def backbone_features(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone embeddings of all crops, one backbone call per run of equal-resolution crops."""
        outputs = []
        for group in _resolution_runs(crops):
            x = torch.cat(group) if len(group) > 1 else group[0]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            outputs.append(self.backbone.global_features(x))
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def forward(
        self, crops: Sequence[torch.Tensor] | torch.Tensor, return_backbone_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if torch.is_tensor(crops):
            crops = [crops]
        features = self.backbone_features(crops)
        projections = self.head(features)
        return (features, projections) if return_backbone_features else projections


def _resolution_runs(crops: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive crops grouped by spatial size (global crops, then local crops)."""
    runs: list[list[torch.Tensor]] = []
    for crop in crops:
        if runs and runs[-1][0].shape[-2:] == crop.shape[-2:]:
            runs[-1].append(crop)
        else:
            runs.append([crop])
    return runs


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` over parameters, in place.

    One fused foreach kernel per op instead of a Python loop over ~150 tensors (it runs every
    step). Buffers (BN statistics) are not averaged: the teacher keeps its own, as in DINO.
    """
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


@torch.no_grad()
def clip_grad_per_parameter_(parameters: Sequence[nn.Parameter], max_norm: float) -> None:
    """DINO's clipping: each parameter's gradient is rescaled to norm <= ``max_norm`` on its own.

    Unlike one global norm, a single exploding layer (the head's last layer early on) cannot
    shrink every other layer's update.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or max_norm <= 0:
        return
    norms = torch._foreach_norm(grads)
    factors = [(max_norm / (n + 1e-6)).clamp_(max=1.0) for n in norms]
    torch._foreach_mul_(grads, factors)

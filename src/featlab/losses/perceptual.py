"""Perceptual loss: distance between frozen-backbone features of prediction and target.

Two rules the reference SR trainers got wrong or left slow:

- The prediction's features are computed WITH autograd (only the target runs under
  ``no_grad``); wrapping both in ``no_grad`` silently gives the generator no perceptual gradient.
- All layers come from ONE truncated backbone pass per image set. Target and prediction go
  through in two calls rather than one concatenated batch: forward cost is the same, but the
  target half then stores no activations and adds no backward work (a concatenated batch would
  run the backward over both halves and keep both halves' activations alive).

The backbone is frozen (eval mode, no parameter gradients) whatever mode the task is in.

Calibration (``normalize``). Raw feature distances differ by 10x and more between backbones (and
between layers of one backbone), so a raw weight means nothing once the backbone changes. With
``normalize: target`` (the shipped default) each layer's distance is divided by the target
features' mean magnitude (mean ``|f|`` for l1, mean ``f**2`` for l2; detached), so every layer's
term is a *relative* feature error: 0 for a perfect prediction, about 1 when the prediction's
features are as far from the target's as the target's are from zero. Multiplying a backbone's
features by any constant leaves it unchanged, so one weight means the same for DINO, ConvNeXt,
VGG, EfficientNet or a self-trained backbone. ``normalize: unit`` instead unit-normalises every
position's feature vector over channels before the distance (LPIPS without its learned channel
weights); ``none`` is the raw distance. The cosine distance is scale-free already.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from featlab.backbones import create
from featlab.errors import ConfigError, unknown_name

DISTANCES = ("l1", "l2", "cosine")
NORMALIZATIONS = ("none", "target", "unit")


def feature_distance(pred: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """Mean L1 / squared L2, or mean (1 - cosine) over channels at each position (dim 1)."""
    if distance == "l1":
        return F.l1_loss(pred, target)
    if distance == "l2":
        return F.mse_loss(pred, target)
    return (1.0 - F.cosine_similarity(pred, target, dim=1, eps=1e-8)).mean()


def target_magnitude(target: torch.Tensor, distance: str) -> torch.Tensor:
    """What the distance of a prediction of all zeros would be: mean ``|f|`` (l1) or ``f**2`` (l2)."""
    target = target.detach().float()
    if distance == "l1":
        return target.abs().mean()
    if distance == "l2":
        return target.square().mean()
    return torch.ones((), device=target.device)


def unit_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each position's channel vector scaled to unit length (LPIPS's ``normalize_tensor``)."""
    return features / (features.float().square().sum(dim=1, keepdim=True).sqrt() + eps).to(features.dtype)


def calibrated_distance(pred: torch.Tensor, target: torch.Tensor, distance: str, normalize: str) -> torch.Tensor:
    """One layer's term under the ``normalize`` rule (see the module docstring)."""
    if normalize == "unit":
        return feature_distance(unit_channels(pred), unit_channels(target), distance)
    value = feature_distance(pred, target, distance)
    if normalize == "target":
        value = value / target_magnitude(target, distance).clamp_min(1e-12)
    return value


class PerceptualLoss(nn.Module):
    """Weighted sum over ``layers`` of ``distance(features(pred), features(target))``; pixels in [0, 1]."""

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str],
        layer_weights: Sequence[float] | None = None,
        distance: str = "l1",
        resize: bool = True,
        feature_norm: str = "none",
        normalize: str = "none",
        pretrained: bool = True,
        checkpoint: str | None = None,
        input_size: int | None = None,
        config_key: str = "loss.perceptual",
    ) -> None:
        super().__init__()
        layers = [layers] if isinstance(layers, str) else [str(layer) for layer in layers]
        if distance not in DISTANCES:
            raise unknown_name(f"{config_key}.distance", distance, DISTANCES, "distance")
        if normalize not in NORMALIZATIONS:
            raise unknown_name(f"{config_key}.normalize", normalize, NORMALIZATIONS, "normalisation")
        if not layers:
            raise ConfigError(f"{config_key}.layers", "is empty; name at least one layer (e.g. [last]), or set "
                                                      f"{config_key}=null to train without a perceptual loss")
        if len(set(layers)) != len(layers):
            raise ConfigError(f"{config_key}.layers", f"a layer is listed twice in {layers}")
        weights = [1.0] * len(layers) if layer_weights is None else [float(w) for w in layer_weights]
        if len(weights) != len(layers):
            raise ConfigError(
                f"{config_key}.layer_weights",
                f"has {len(weights)} entries but layers has {len(layers)} ({', '.join(layers)})",
            )
        self.layers = layers
        self.layer_weights = weights
        self.distance = distance
        self.normalize = normalize
        self.extractor = create(
            backbone,
            layers,
            pretrained=pretrained,
            checkpoint=checkpoint,
            trainable=False,
            feature_norm=feature_norm,
            input_size=input_size,
            resize=resize,
            config_key=config_key,
            name_key=f"{config_key}.backbone",
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self.extractor(target)
        pred_features = self.extractor(pred)
        terms = [
            w * calibrated_distance(pred_features[layer], target_features[layer], self.distance, self.normalize)
            for layer, w in zip(self.layers, self.layer_weights)
        ]
        return torch.stack([t.float() for t in terms]).sum() if len(terms) > 1 else terms[0]

    def extra_repr(self) -> str:
        return (f"layers={self.layers}, layer_weights={self.layer_weights}, distance={self.distance}, "
                f"normalize={self.normalize}")

"""`FeatureExtractor`: pixels in [0, 1] -> ``{layer: features}`` from one truncated pass.

Resizing to the native grid and the backbone's own mean/std normalisation happen here, once, so
callers (losses, tasks) only ever hand over RGB in [0, 1]. Nothing here runs under ``no_grad``:
gradients reach the input whenever the caller wants them (the SR perceptual pitfall), while a
frozen extractor's own parameters never need or get gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featlab.backbones.featnorm import layer_norm_channels
from featlab.backbones.taps import TapPlan
from featlab.errors import ConfigError


class FeatureExtractor(nn.Module):
    """A truncated backbone that returns every requested layer from a single forward pass.

    Attributes: ``name``; ``layers`` (requested, in order); ``channels`` (per requested layer);
    ``strides`` (input pixels per feature cell; None for vectors); ``embed_dim`` (size of
    ``cls``/``pool``); ``input_size`` (square side inputs are resized to); ``patch_size`` (ViTs) or
    None; ``mean``/``std`` (pixel normalisation); ``valid_layers``; ``family`` (``vit | cnn | vgg``);
    ``model`` (the truncated timm module; never call its own ``forward``); ``frozen``;
    ``feature_norm``. ViT grids are permuted views with NHWC memory (no copy): use ``reshape``,
    not ``view``, on them.
    """

    def __init__(
        self,
        *,
        name: str,
        model: nn.Module,
        taps: TapPlan,
        layers: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        input_size: int,
        resize: bool,
        trainable: bool,
        feature_norm: str,
        config_key: str = "backbone",
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.taps = taps
        self.layers = list(layers)
        self.family: str = taps.family
        self.valid_layers = list(taps.valid_layers)
        self.embed_dim = int(taps.embed_dim)
        self.patch_size: int | None = taps.patch_size
        self.input_size = int(input_size)
        self.resize = bool(resize)
        self.feature_norm = feature_norm
        self.frozen = not trainable
        self.config_key = config_key
        self.build_kwargs: dict[str, Any] = {}  # extra timm kwargs, recorded by save_backbone
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.register_buffer(
            "pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.channels, self.strides = self._probe()
        if self.frozen:
            self.requires_grad_(False)
            self.train(False)

    # ------------------------------------------------------------------ core pass
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``{layer: (B, C, h, w) or (B, C)}`` in request order."""
        raw = self.taps.run(self.model, self.prepare(x), self.layers)
        if self.feature_norm == "layernorm":
            return {layer: layer_norm_channels(f) for layer, f in raw.items()}
        return raw

    def raw_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Like ``forward`` but without ``feature_norm``: what :meth:`feature_stats` should see."""
        return self.taps.run(self.model, self.prepare(x), self.layers)

    def global_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim)`` image embedding (``cls`` for ViTs, ``pool`` for convnets), raw.

        Needs the end of the network: include ``cls``/``pool`` or ``last`` in ``layers``.
        """
        layer = self.taps.embed_layer
        if not self.taps.can_compute(layer):
            raise ConfigError(
                f"{self.config_key}.layers",
                f"global_features needs '{layer}' but {self.name} was truncated after "
                f"{self.layers}; add '{layer}' to layers",
            )
        return self.taps.run(self.model, self.prepare(x), (layer,))[layer]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Resize to the native grid (bilinear, antialias) when asked, then normalise with mean/std."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects (B, 3, H, W) RGB in [0, 1]; got shape {tuple(x.shape)}")
        size = self.input_size
        if self.resize and (x.shape[-2] != size or x.shape[-1] != size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        elif self.patch_size is not None and (x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size):
            raise ConfigError(
                f"{self.config_key}.resize",
                f"{self.name} needs H and W to be multiples of its patch size {self.patch_size} "
                f"when resize=false; got {tuple(x.shape[-2:])}",
            )
        return (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> FeatureExtractor:
        """A frozen extractor stays in eval mode whatever Lightning asks (BN stats, dropout)."""
        return super().train(False if self.frozen else mode)

    # ------------------------------------------------------------------ statistics
    @staticmethod
    @torch.no_grad()
    def feature_stats(out: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{layer: (mean, std)}`` over all elements, float32 scalars, for logging feature scale."""
        stats = {}
        for layer, feature in out.items():
            values = feature.detach().float()
            stats[layer] = (values.mean(), values.std())
        return stats

    # ------------------------------------------------------------------ shapes
    @torch.no_grad()
    def _probe(self) -> tuple[dict[str, int], dict[str, int | None]]:
        """Channels and strides of the requested layers from one tiny pass (exact for any model)."""
        side = 2 * self.patch_size if self.patch_size else 64
        if getattr(self.taps, "probe_at_input_size", False):
            side = self.input_size  # e.g. Swin checks its input size strictly
        was_training = self.model.training
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        self.model.eval()
        try:
            out = self.taps.run(self.model, torch.zeros(1, 3, side, side, device=device), self.layers)
        finally:
            self.model.train(was_training)
        channels = {layer: int(f.shape[1]) for layer, f in out.items()}
        strides = {layer: (side // f.shape[-1] if f.dim() == 4 else None) for layer, f in out.items()}
        return channels, strides

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, layers={self.layers}, input_size={self.input_size}, resize={self.resize}, "
            f"feature_norm={self.feature_norm}, frozen={self.frozen}"
        )

"""Feature normalisation: ``none | layernorm | standardize``.

Raw feature scales differ by almost an order of magnitude between backbones (the slot study), so
losses and decoders that compare backbones need a common scale. ``layernorm`` is parameter-free
and per position, so the extractor applies it itself (``create(..., feature_norm=...)``, the
options in ``EXTRACTOR_NORMS``). ``standardize`` uses per-channel statistics estimated from data
(:class:`FeatureNormalizer`, owned by the module that fits them, e.g. the slots task), accumulated
as sums and counts so that DDP ranks can all-reduce them before they are frozen. Accumulate and
freeze in one go (e.g. in ``on_fit_start``) before any DDP-wrapped forward: DDP broadcasts rank 0's
buffers on every forward, which would overwrite the other ranks' partial sums.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from featlab.errors import require, unknown_name

FEATURE_NORMS = ("none", "layernorm", "standardize")
EXTRACTOR_NORMS = ("none", "layernorm")  # the ones that need no statistics fitted on data


def layer_norm_channels(feature: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Parameter-free LayerNorm over channels at every position of ``(B, C, ...)`` features."""
    if feature.dim() == 2:
        return F.layer_norm(feature, feature.shape[1:], eps=eps)
    moved = feature.movedim(1, -1)
    return F.layer_norm(moved, moved.shape[-1:], eps=eps).movedim(-1, 1)


class ChannelStandardizer(nn.Module):
    """Per-channel mean/std for one layer: accumulate, freeze once, then standardise.

    Sums are float64 buffers so long accumulations stay exact enough; after :meth:`freeze` the
    float32 ``mean``/``std`` buffers are used and never change again (they travel in state dicts).
    Each std is floored at ``min_std_fraction`` of the median channel std: channels that (almost)
    never vary on the training set carry no information, and dividing by their ~0 std turns any
    test-time activity into huge values (EfficientNet's ReLU6 head has such dead channels).
    """

    def __init__(self, channels: int, eps: float = 1e-6, min_std_fraction: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.min_std_fraction = min_std_fraction
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(channels, dtype=torch.float64))
        self.register_buffer("sumsq", torch.zeros(channels, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("frozen_flag", torch.zeros((), dtype=torch.bool))
        self.frozen = False

    @torch.no_grad()
    def update(self, feature: torch.Tensor) -> None:
        if self.frozen:
            raise RuntimeError("standardization statistics are frozen; they never change once frozen")
        values = feature.detach().to(torch.float64)
        dims = (0,) if values.dim() == 2 else (0, *range(2, values.dim()))
        self.count += values.numel() / values.shape[1]
        self.sum += values.sum(dim=dims)
        self.sumsq += values.square().sum(dim=dims)

    @torch.no_grad()
    def freeze(self, sync: bool = True) -> None:
        """Turn sums into mean/std (all-reduced over DDP ranks first when ``sync``) and lock them."""
        if self.frozen:
            return
        if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in (self.count, self.sum, self.sumsq):
                dist.all_reduce(buffer)
        if float(self.count) <= 0:
            raise RuntimeError("no statistics were accumulated before freeze")
        mean = self.sum / self.count
        var = (self.sumsq / self.count - mean.square()).clamp_min(0.0)
        self.mean.copy_(mean)
        std = (var + self.eps).sqrt()
        self.std.copy_(std.clamp_min(self.min_std_fraction * float(std.median())))
        self.frozen_flag.fill_(True)
        self.frozen = True

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (feature.dim() - 2)
        mean = self.mean.to(feature.dtype).view(shape)
        std = self.std.to(feature.dtype).view(shape)
        return (feature - mean) / std

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.frozen = bool(self.frozen_flag)



class FeatureNormalizer(nn.Module):
    """``none``, per-position ``layernorm``, or per-channel ``standardize`` with training-set statistics.

    Channel sums of the *raw* features are accumulated in every mode (:meth:`update`) because the
    backbone comparison reports each backbone's raw mean/std; :meth:`freeze` all-reduces the sums
    across DDP ranks and fixes mean/std for good (dead channels' std floored, see
    :class:`ChannelStandardizer`, whose buffers also carry the statistics in checkpoints).
    """

    def __init__(self, channels: int, mode: str = "standardize", min_std_fraction: float = 0.1,
                 key: str = "task.feature_norm") -> None:
        super().__init__()
        if mode not in FEATURE_NORMS:
            raise unknown_name(key, mode, FEATURE_NORMS, "feature normalisation")
        self.mode, self.channels, self.key = mode, channels, key
        self.stats = ChannelStandardizer(channels, min_std_fraction=min_std_fraction)

    @property
    def is_frozen(self) -> bool:
        return self.stats.frozen

    def update(self, features: torch.Tensor) -> None:
        """Add a batch of (B, C, H, W) raw features to the sums; a no-op once frozen."""
        if not self.is_frozen:
            self.stats.update(features)

    def freeze(self, sync: bool = True) -> None:
        """Fix the statistics (summed over DDP ranks when ``sync``); later updates are ignored."""
        require(float(self.stats.count) > 0, "task.stats_batches",
                "no features were seen before freezing the statistics; give at least one batch")
        if self.is_frozen:
            return
        self.stats.freeze(sync=sync)

    def raw_statistics(self) -> tuple[float, float]:
        """Global mean and std of the raw features over every channel and position seen."""
        n = float(self.stats.count) * self.channels
        if n == 0:
            return math.nan, math.nan
        mean = float(self.stats.sum.sum()) / n
        return mean, math.sqrt(max(float(self.stats.sumsq.sum()) / n - mean * mean, 0.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.mode == "layernorm":
            return layer_norm_channels(features)
        if self.mode == "standardize":
            require(self.is_frozen, self.key,
                    "standardize needs training-set statistics: they are estimated when fit starts "
                    "(or come with a checkpoint); use layernorm/none to skip them")
            return self.stats(features)
        return features

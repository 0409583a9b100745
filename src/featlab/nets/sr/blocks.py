"""Building blocks shared by the SR / restoration networks.

Upsamplers, residual blocks, mean shifting and shape padding appear in several published
architectures with identical structure; keeping one copy here means a fix (say, to padding for
dynamic-shape ONNX export) lands in every network at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featlab.errors import require

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""Per-channel mean of DIV2K in [0, 1]; EDSR and SwinIR centre their input with it."""


def check_scale(net: str, scale: int, supported: Sequence[int]) -> int:
    """Return ``scale`` if the architecture supports it, else a ConfigError naming ``data.scale``.

    The scale comes from the data config (the net config interpolates ``${data.scale}``), so the
    message points there rather than at the network.
    """
    ok = isinstance(scale, int) and not isinstance(scale, bool) and scale in supported
    require(ok, "data.scale", f"{net} supports scales {list(supported)}, got {scale!r}")
    return scale


def conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    """3x3 'same' convolution, the default layer of nearly every SR network."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


class MeanShift(nn.Module):
    """Subtract (``sign=-1``) or add back (``sign=+1``) a fixed per-channel mean.

    A buffer-based shift instead of EDSR's frozen 1x1 conv: same maths, no fake parameters for an
    optimiser to skip, and it follows ``.to(dtype)`` / channels_last like any buffer.
    """

    def __init__(self, mean: Sequence[float], sign: int) -> None:
        super().__init__()
        # a constant from the config, not a learned weight: kept out of checkpoints
        mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.sign = float(sign)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.sign * self.mean.to(x.dtype)


def channel_mean(channels: int, mean: Sequence[float] = DIV2K_RGB_MEAN) -> tuple[float, ...]:
    """The RGB mean for 3-channel inputs, zeros otherwise (grey or multispectral data)."""
    return tuple(mean) if channels == len(mean) else (0.0,) * channels


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip and no batch norm (EDSR's residual block)."""

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(inplace=True), conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


class PixelShuffleUpsampler(nn.Sequential):
    """EDSR/RDN upsampler: ``log2(scale)`` x (conv n->4n, shuffle 2), or conv n->9n, shuffle 3.

    Staged x2 steps keep each conv's output width at 4n instead of 16n for x4.
    """

    def __init__(self, n_feats: int, scale: int) -> None:
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            steps = int(math.log2(scale))
            require(2**steps == scale, "data.scale", f"pixel-shuffle upsampler needs 2^n or 3, got {scale}")
            for _ in range(steps):
                layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        super().__init__(*layers)


class OneStepUpsampler(nn.Sequential):
    """conv to ``out * scale^2`` channels then one pixel shuffle (ESPCN; SwinIR 'pixelshuffledirect')."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, kernel_size: int = 3) -> None:
        conv = nn.Conv2d(in_channels, out_channels * scale * scale, kernel_size, padding=kernel_size // 2)
        super().__init__(conv, nn.PixelShuffle(scale))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (NAFNet's norm).

    Done as a permute to NHWC + ``F.layer_norm``: for channels_last tensors the permute is free,
    autocast runs the normalisation in fp32, and ONNX gets a plain LayerNormalization node.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.channels, self.eps = channels, eps  # a Python int: traced exporters need it static

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> Tensor:
    """Pad the bottom/right of an NCHW tensor so H and W are multiples of ``multiple``.

    Windowed attention and U-Net down-sampling need such sizes; callers crop the output back,
    so any input size works. The pad amounts are computed with shape arithmetic only (no Python
    branches) so the graph stays valid for every size under dynamic-shape export. ``reflect``
    needs the pad to be smaller than the image, so it is only safe when ``multiple`` is no larger
    than the smallest supported side; :func:`pad_reflect_or_replicate` covers tiny inputs.
    """
    h, w = x.shape[-2:]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def pad_reflect_or_replicate(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad to a multiple (as SwinIR / Real-ESRGAN do), falling back to replicate for
    images too small to reflect (side <= pad), so any input size is accepted."""
    h, w = x.shape[-2:]
    if h > multiple and w > multiple:
        return pad_to_multiple(x, multiple, "reflect")
    return pad_to_multiple(x, multiple, "replicate")


def linear_rates(total: float, n: int) -> list[float]:
    """``n`` evenly spaced values from 0 to ``total`` (stochastic-depth schedules). Plain Python,
    so networks can be built on the ``meta`` device (no data to read back)."""
    return [total * i / (n - 1) for i in range(n)] if n > 1 else [0.0] * n


def bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """Bicubic interpolation by an integer factor (SRCNN's pre-upsampling, global skips)."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)

"""SwinIR (Liang et al., ICCVW 2021) for classical, lightweight and real-world SR and restoration.

Defaults are the published lightweight setting: embed 60, four residual Swin transformer blocks
(RSTB) of depth 6 with 6 heads, window 8, MLP ratio 2, stochastic depth 0.1, 'pixelshuffledirect'
upsampler (one conv + pixel shuffle), input centred by the DIV2K mean. The other published
settings are reachable by arguments, as in the official constructor:

- classical SR: embed 180, depths/heads [6]*6, ``upsampler="pixelshuffle"`` (conv to ``num_feat``
  + LeakyReLU, staged x2/x3 pixel shuffles, conv);
- real-world SR: ``upsampler="nearest+conv"`` (Real-ESRGAN-like nearest x2 steps + convs; x2, x4);
- denoising / JPEG: ``upsampler="none"`` (scale 1, the default there; the net predicts a residual
  added to the input);
- ``resi_connection="3conv"`` (conv to dim/4, 1x1, conv back, LeakyReLU 0.2 between) in every
  RSTB and after the body, as in the large real-world models.

The image is reflect-padded to a multiple of the window and the output cropped back, so any size
works. Implementation notes (same maths as the paper, different bookkeeping): features stay
``(B, H, W, C)`` inside the transformer instead of flattened tokens, the shift mask is computed
per forward from the padded size (no cached masks tied to a training patch size), and the
relative-position index is a non-persistent buffer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from featlab.errors import require
from featlab.nets.sr.blocks import (
    DIV2K_RGB_MEAN,
    MeanShift,
    OneStepUpsampler,
    PixelShuffleUpsampler,
    channel_mean,
    check_scale,
    conv3x3,
    linear_rates,
    pad_reflect_or_replicate,
)
from featlab.nets.sr.swin import SwinStage, init_transformer_weights

UPSAMPLERS = ("pixelshuffledirect", "pixelshuffle", "nearest+conv", "none")
RESI_CONNECTIONS = ("1conv", "3conv")


def residual_conv(dim: int, kind: str) -> nn.Module:
    """The conv closing an RSTB and the body: one 3x3 conv, or SwinIR's parameter-saving '3conv'."""
    if kind == "1conv":
        return conv3x3(dim, dim)
    return nn.Sequential(
        conv3x3(dim, dim // 4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim // 4, 1),
        nn.LeakyReLU(0.2, inplace=True),
        conv3x3(dim // 4, dim),
    )


class RSTB(nn.Module):
    """Residual Swin Transformer Block: a Swin stage, a conv, and a skip around both."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_path: list[float],
        resi_connection: str = "1conv",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.stage = SwinStage(dim, depth, num_heads, window, mlp_ratio, drop_path, qkv_bias)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, H, W, C)``."""
        y = self.stage(x).permute(0, 3, 1, 2)
        return x + self.conv(y).permute(0, 2, 3, 1)


class SwinIR(nn.Module):
    """SwinIR (lightweight defaults).

    Tiny test size: ``SwinIR(s, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4)``.
    """

    supported_scales = (1, 2, 3, 4, 8)

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        out_channels: int = 3,
        embed_dim: int = 60,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        upsampler: str | None = None,
        resi_connection: str = "1conv",
        num_feat: int = 64,
        img_range: float = 1.0,
        qkv_bias: bool = True,
        patch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.scale = check_scale("SwinIR", scale, self.supported_scales)
        if upsampler is None:  # the lightweight model's head, or the denoising layout at scale 1
            upsampler = "none" if scale == 1 else "pixelshuffledirect"
        require(upsampler in UPSAMPLERS, "net.upsampler", f"must be one of {list(UPSAMPLERS)}, got {upsampler!r}")
        require(
            resi_connection in RESI_CONNECTIONS,
            "net.resi_connection",
            f"must be one of {list(RESI_CONNECTIONS)}, got {resi_connection!r}",
        )
        require(
            (upsampler == "none") == (scale == 1),
            "data.scale",
            f"SwinIR upsampler '{upsampler}' does not work at scale {scale} "
            "(scale 1 needs upsampler none, and upsampler none only does scale 1)",
        )
        if upsampler == "nearest+conv":
            require(scale in (2, 4), "data.scale", f"SwinIR 'nearest+conv' supports scales 2 and 4, got {scale}")
        if upsampler == "pixelshuffle":
            ok = scale == 3 or 2 ** int(math.log2(scale)) == scale
            require(ok, "data.scale", f"SwinIR 'pixelshuffle' supports 2^n and 3, got {scale}")
        self.in_channels = in_channels
        depths, num_heads = tuple(depths), tuple(num_heads)  # Hydra passes ListConfig
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.upsampler = upsampler
        self.img_range = float(img_range)
        self.window_size = self.size_multiple = window_size
        self.sub_mean = MeanShift(channel_mean(in_channels, rgb_mean), sign=-1)
        self.add_mean = MeanShift(channel_mean(out_channels, rgb_mean), sign=+1)
        self.conv_first = conv3x3(in_channels, embed_dim)
        self.patch_norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()
        rates = linear_rates(drop_path_rate, sum(depths))
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            RSTB(embed_dim, d, h, window_size, mlp_ratio, rates[s : s + d], resi_connection, qkv_bias)
            for d, h, s in zip(depths, num_heads, starts)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffledirect":
            self.upsample = OneStepUpsampler(embed_dim, out_channels, scale)
        elif upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(conv3x3(embed_dim, num_feat), nn.LeakyReLU(inplace=True))
            self.upsample = PixelShuffleUpsampler(num_feat, scale)
            self.conv_last = conv3x3(num_feat, out_channels)
        elif upsampler == "nearest+conv":
            self.conv_before_upsample = nn.Sequential(conv3x3(embed_dim, num_feat), nn.LeakyReLU(inplace=True))
            self.conv_up1 = conv3x3(num_feat, num_feat)
            self.conv_up2 = conv3x3(num_feat, num_feat) if scale == 4 else None
            self.conv_hr = conv3x3(num_feat, num_feat)
            self.conv_last = conv3x3(num_feat, out_channels)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        else:
            require(in_channels == out_channels, "net.out_channels", "upsampler none adds the input back")
            self.conv_last = conv3x3(embed_dim, out_channels)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = pad_reflect_or_replicate(self.sub_mean(x), self.size_multiple)
        if self.img_range != 1.0:
            x = x * self.img_range
        shallow = self.conv_first(x)
        feat = self.patch_norm(shallow.permute(0, 2, 3, 1))
        for layer in self.layers:
            feat = layer(feat)
        feat = self.norm(feat).permute(0, 3, 1, 2)
        feat = self.conv_after_body(feat) + shallow
        if self.upsampler == "pixelshuffledirect":
            out = self.upsample(feat)
        elif self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif self.upsampler == "nearest+conv":
            feat = self.conv_before_upsample(feat)
            feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
            if self.conv_up2 is not None:
                feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
            out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        else:
            out = x + self.conv_last(feat)
        if self.img_range != 1.0:
            out = out / self.img_range
        out = self.add_mean(out)
        return out[..., : h * self.scale, : w * self.scale]

"""SwinIR lightweight (Liang et al., ICCVW 2021) for classical/lightweight SR.

Published lightweight setting: embed 60, four residual Swin transformer blocks (RSTB) of depth 6
with 6 heads, window 8, MLP ratio 2, stochastic depth 0.1, 'pixelshuffledirect' upsampler
(one conv + pixel shuffle), input centred by the DIV2K mean. The image is reflect-padded to a
multiple of the window and the output cropped back, so any size works.

Implementation notes (same maths as the paper, different bookkeeping): features stay
``(B, H, W, C)`` inside the transformer instead of flattened tokens, the shift mask is computed
per forward from the padded size (no cached masks tied to a training patch size), and the
relative-position index is a non-persistent buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from featlab.nets.sr.blocks import (
    DIV2K_RGB_MEAN,
    MeanShift,
    OneStepUpsampler,
    channel_mean,
    check_scale,
    conv3x3,
    linear_rates,
    pad_reflect_or_replicate,
)
from featlab.nets.sr.swin import SwinStage, init_transformer_weights


class RSTB(nn.Module):
    """Residual Swin Transformer Block: a Swin stage, a 3x3 conv, and a skip around both."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, drop_path: list[float]
    ) -> None:
        super().__init__()
        self.stage = SwinStage(dim, depth, num_heads, window, mlp_ratio, drop_path)
        self.conv = conv3x3(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, H, W, C)``."""
        y = self.stage(x).permute(0, 3, 1, 2)
        return x + self.conv(y).permute(0, 2, 3, 1)


class SwinIR(nn.Module):
    """SwinIR (lightweight defaults).

    Tiny test size: ``SwinIR(s, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4)``.
    """

    supported_scales = (2, 3, 4)

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
    ) -> None:
        super().__init__()
        self.scale = check_scale("SwinIR", scale, self.supported_scales)
        self.in_channels = in_channels
        depths, num_heads = tuple(depths), tuple(num_heads)  # Hydra passes ListConfig
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.window_size = self.size_multiple = window_size
        self.sub_mean = MeanShift(channel_mean(in_channels, rgb_mean), sign=-1)
        self.add_mean = MeanShift(channel_mean(out_channels, rgb_mean), sign=+1)
        self.conv_first = conv3x3(in_channels, embed_dim)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = linear_rates(drop_path_rate, sum(depths))
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            RSTB(embed_dim, d, h, window_size, mlp_ratio, rates[s : s + d])
            for d, h, s in zip(depths, num_heads, starts)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = conv3x3(embed_dim, embed_dim)
        self.upsample = OneStepUpsampler(embed_dim, out_channels, scale)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = pad_reflect_or_replicate(self.sub_mean(x), self.size_multiple)
        shallow = self.conv_first(x)
        feat = self.patch_norm(shallow.permute(0, 2, 3, 1))
        for layer in self.layers:
            feat = layer(feat)
        feat = self.norm(feat).permute(0, 3, 1, 2)
        x = self.conv_after_body(feat) + shallow
        out = self.add_mean(self.upsample(x))
        return out[..., : h * self.scale, : w * self.scale]

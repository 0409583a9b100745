"""EDSR baseline (Lim et al., CVPRW 2017): 16 BN-free residual blocks of 64 features.

Input is centred by the DIV2K RGB mean (for [0, 1] images), a global skip spans the body, and a
staged pixel-shuffle upsampler produces the HR image. ``img_range`` multiplies the centred input
(and divides the output) the way BasicSR's EDSR does: its published files were trained with
``img_range=255`` (pixel values in [0, 255] inside the net), so their biases only fit that range.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from featlab.nets.sr.blocks import (
    DIV2K_RGB_MEAN,
    MeanShift,
    PixelShuffleUpsampler,
    ResBlock,
    channel_mean,
    check_scale,
    conv3x3,
)


class EDSR(nn.Module):
    """EDSR; the paper's large model is ``n_resblocks=32, n_feats=256, res_scale=0.1``.

    Tiny test size: ``EDSR(s, n_resblocks=2, n_feats=8)``.
    """

    supported_scales = (2, 3, 4, 8)
    size_multiple = 1

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        out_channels: int = 3,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = check_scale("EDSR", scale, self.supported_scales)
        self.in_channels = in_channels
        self.img_range = float(img_range)
        self.sub_mean = MeanShift(channel_mean(in_channels, rgb_mean), sign=-1)
        self.add_mean = MeanShift(channel_mean(out_channels, rgb_mean), sign=+1)
        self.head = conv3x3(in_channels, n_feats)
        self.body = nn.Sequential(
            *(ResBlock(n_feats, res_scale) for _ in range(n_resblocks)), conv3x3(n_feats, n_feats)
        )
        self.tail = nn.Sequential(PixelShuffleUpsampler(n_feats, scale), conv3x3(n_feats, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        x = self.sub_mean(x)
        if self.img_range != 1.0:
            x = x * self.img_range
        x = self.head(x)
        x = self.tail(x + self.body(x))
        if self.img_range != 1.0:
            x = x / self.img_range
        return self.add_mean(x)

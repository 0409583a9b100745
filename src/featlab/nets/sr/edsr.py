"""EDSR baseline (Lim et al., CVPRW 2017): 16 BN-free residual blocks of 64 features.

Input is centred by the DIV2K RGB mean (for [0, 1] images; the original works in [0, 255]),
a global skip spans the body, and a staged pixel-shuffle upsampler produces the HR image.
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

    supported_scales = (2, 3, 4)
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
    ) -> None:
        super().__init__()
        self.scale = check_scale("EDSR", scale, self.supported_scales)
        self.in_channels = in_channels
        self.sub_mean = MeanShift(channel_mean(in_channels, rgb_mean), sign=-1)
        self.add_mean = MeanShift(channel_mean(out_channels, rgb_mean), sign=+1)
        self.head = conv3x3(in_channels, n_feats)
        self.body = nn.Sequential(
            *(ResBlock(n_feats, res_scale) for _ in range(n_resblocks)), conv3x3(n_feats, n_feats)
        )
        self.tail = nn.Sequential(PixelShuffleUpsampler(n_feats, scale), conv3x3(n_feats, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))

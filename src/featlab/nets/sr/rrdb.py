"""RRDBNet, the ESRGAN / Real-ESRGAN generator (Wang et al., ECCVW 2018 / ICCVW 2021).

23 residual-in-residual dense blocks of 64 features (growth 32, LeakyReLU 0.2, residual scaling
0.2), then two nearest-neighbour x2 + conv steps. For scale 2 and 1 Real-ESRGAN first folds the
image with pixel-unshuffle (by 2 or 4) so the body always runs at 1/4 of the output resolution;
the input is reflect-padded to a multiple of the fold and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featlab.nets.sr.blocks import check_scale, conv3x3, pad_reflect_or_replicate

_RES_SCALE = 0.2


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class DenseBlock5(nn.Module):
    """Five densely connected 3x3 convs (the last without activation), scaled residual."""

    def __init__(self, n_feats: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(n_feats + i * growth, growth) for i in range(4))
        self.conv_out = conv3x3(n_feats + 4 * growth, n_feats)
        self.act = _lrelu()
        for conv in [*self.convs, self.conv_out]:  # ESRGAN: Kaiming init scaled by 0.1
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return x + self.conv_out(torch.cat(feats, dim=1)) * _RES_SCALE


class RRDB(nn.Module):
    """Three dense blocks inside one more scaled residual."""

    def __init__(self, n_feats: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*(DenseBlock5(n_feats, growth) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * _RES_SCALE


class RRDBNet(nn.Module):
    """ESRGAN/Real-ESRGAN generator. Tiny test size: ``RRDBNet(s, n_feats=8, n_blocks=1, growth=4)``."""

    supported_scales = (1, 2, 4)

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        out_channels: int = 3,
        n_feats: int = 64,
        n_blocks: int = 23,
        growth: int = 32,
    ) -> None:
        super().__init__()
        self.scale = check_scale("RRDBNet", scale, self.supported_scales)
        self.in_channels = in_channels
        self.fold = 4 // scale  # pixel-unshuffle factor: 4 for x1, 2 for x2, 1 for x4
        self.size_multiple = self.fold
        self.conv_first = conv3x3(in_channels * self.fold**2, n_feats)
        self.body = nn.Sequential(*(RRDB(n_feats, growth) for _ in range(n_blocks)))
        self.conv_body = conv3x3(n_feats, n_feats)
        self.conv_up1 = conv3x3(n_feats, n_feats)
        self.conv_up2 = conv3x3(n_feats, n_feats)
        self.conv_hr = conv3x3(n_feats, n_feats)
        self.conv_last = conv3x3(n_feats, out_channels)
        self.act = _lrelu()

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if self.fold > 1:
            x = F.pixel_unshuffle(pad_reflect_or_replicate(x, self.fold), self.fold)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.act(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.act(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.act(self.conv_hr(feat)))
        return out[..., : h * self.scale, : w * self.scale]

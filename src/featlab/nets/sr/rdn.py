"""RDN (Zhang et al., CVPR 2018): residual dense blocks fused globally.

Published defaults D=16 blocks, C=8 conv layers per block, G=64 growth, G0=64 features. Names
here: ``n_blocks`` (D), ``n_layers`` (C), ``growth`` (G), ``n_feats`` (G0). The upsampler keeps
G0 channels between its pixel shuffles where the paper uses G; with the published G = G0 = 64
the two are identical.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from featlab.nets.sr.blocks import PixelShuffleUpsampler, check_scale, conv3x3


class ResidualDenseBlock(nn.Module):
    """C densely connected conv-ReLU layers, 1x1 local feature fusion, local residual."""

    def __init__(self, n_feats: int, growth: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(conv3x3(n_feats + i * growth, growth), nn.ReLU(inplace=True))
            for i in range(n_layers)
        )
        self.fuse = nn.Conv2d(n_feats + n_layers * growth, n_feats, 1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return x + self.fuse(torch.cat(feats, dim=1))


class RDN(nn.Module):
    """Residual Dense Network. Tiny test size: ``RDN(s, n_feats=8, n_blocks=2, n_layers=2, growth=4)``."""

    supported_scales = (2, 3, 4)
    size_multiple = 1

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        out_channels: int = 3,
        n_feats: int = 64,
        n_blocks: int = 16,
        n_layers: int = 8,
        growth: int = 64,
    ) -> None:
        super().__init__()
        self.scale = check_scale("RDN", scale, self.supported_scales)
        self.in_channels = in_channels
        self.sfe1 = conv3x3(in_channels, n_feats)
        self.sfe2 = conv3x3(n_feats, n_feats)
        self.blocks = nn.ModuleList(ResidualDenseBlock(n_feats, growth, n_layers) for _ in range(n_blocks))
        self.gff = nn.Sequential(nn.Conv2d(n_blocks * n_feats, n_feats, 1), conv3x3(n_feats, n_feats))
        self.upsample = nn.Sequential(PixelShuffleUpsampler(n_feats, scale), conv3x3(n_feats, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        f_minus1 = self.sfe1(x)
        x = self.sfe2(f_minus1)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.gff(torch.cat(outs, dim=1)) + f_minus1
        return self.upsample(x)

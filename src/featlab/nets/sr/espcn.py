"""ESPCN (Shi et al., CVPR 2016): features at LR resolution, one sub-pixel convolution at the end.

Published layout (f1,n1)=(5,64), (f2,n2)=(3,32), f3=3 with tanh activations. The paper works on
the Y channel; here the same layers take RGB (``in_channels``) like the rest of the suite.
"""

from __future__ import annotations

from torch import Tensor, nn

from featlab.nets.sr.blocks import OneStepUpsampler, check_scale


class ESPCN(nn.Module):
    """Efficient sub-pixel CNN. Tiny test size: ``ESPCN(s, n_feats=8, n_feats_mid=4)``."""

    supported_scales = (2, 3, 4, 8)
    size_multiple = 1

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        out_channels: int = 3,
        n_feats: int = 64,
        n_feats_mid: int = 32,
    ) -> None:
        super().__init__()
        self.scale = check_scale("ESPCN", scale, self.supported_scales)
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, n_feats, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(n_feats, n_feats_mid, 3, padding=1),
            nn.Tanh(),
        )
        self.upsample = OneStepUpsampler(n_feats_mid, out_channels, scale, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample(self.features(x))

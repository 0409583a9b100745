"""SRCNN (Dong et al., TPAMI 2016), the 9-5-5 variant with 64/32 filters.

SRCNN is defined on a bicubically pre-upscaled image; the interpolation happens inside
``forward`` so every SR net in the suite has the same LR -> SR interface. Deviation: 'same'
padding instead of the paper's valid convolutions, so the output keeps the full size.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from featlab.nets.sr.blocks import bicubic_upsample, check_scale


class SRCNN(nn.Module):
    """Patch extraction -> non-linear mapping -> reconstruction on the bicubic image.

    Tiny test size: ``SRCNN(s, n_feats=8, n_feats_mid=4)``.
    """

    supported_scales = (2, 3, 4)
    size_multiple = 1

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        out_channels: int = 3,
        n_feats: int = 64,
        n_feats_mid: int = 32,
        kernel_sizes: Sequence[int] = (9, 5, 5),
    ) -> None:
        super().__init__()
        self.scale = check_scale("SRCNN", scale, self.supported_scales)
        self.in_channels = in_channels
        k1, k2, k3 = kernel_sizes
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, n_feats, k1, padding=k1 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats_mid, k2, padding=k2 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats_mid, out_channels, k3, padding=k3 // 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(bicubic_upsample(x, self.scale))

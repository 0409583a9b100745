"""FSRCNN (Dong et al., ECCV 2016): shrink -> map -> expand at LR, then a 9x9 deconvolution.

Published defaults d=56, s=12, m=4 with PReLU (one slope per channel).
"""

from __future__ import annotations

from torch import Tensor, nn

from featlab.nets.sr.blocks import check_scale


def _conv_prelu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.PReLU(out_channels),
    ]


class FSRCNN(nn.Module):
    """Fast SRCNN. Tiny test size: ``FSRCNN(s, d=8, s_feats=4, m=1)``.

    ``s_feats`` is the paper's ``s`` (shrunk width), renamed because ``s`` reads like the scale.
    """

    supported_scales = (2, 3, 4)
    size_multiple = 1

    def __init__(
        self,
        scale: int,
        in_channels: int = 3,
        out_channels: int = 3,
        d: int = 56,
        s_feats: int = 12,
        m: int = 4,
    ) -> None:
        super().__init__()
        self.scale = check_scale("FSRCNN", scale, self.supported_scales)
        self.in_channels = in_channels
        layers = _conv_prelu(in_channels, d, 5) + _conv_prelu(d, s_feats, 1)
        for _ in range(m):
            layers += _conv_prelu(s_feats, s_feats, 3)
        layers += _conv_prelu(s_feats, d, 1)
        self.body = nn.Sequential(*layers)
        # out = (h - 1) * scale - 2 * 4 + 9 + (scale - 1) = h * scale
        self.deconv = nn.ConvTranspose2d(
            d, out_channels, 9, stride=scale, padding=4, output_padding=scale - 1
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.deconv(self.body(x))

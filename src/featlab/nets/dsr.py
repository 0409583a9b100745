"""The face deep-super-resolution (DSR) network: very-low-resolution faces (14x14) to 112x112.

A BN-free residual CNN in the EDSR mould, sized for faces: ``base_channels`` features through
``residual_blocks`` residual blocks with a long skip, then a pixel-shuffle upsampler with one
stage per prime factor of the scale (x8 = three x2 stages; x7 for 16 -> 112 is one x7 stage), so
any integer scale works. The output is added to the bicubic upscale of the input: at x8 the
network only has to supply the detail bicubic cannot, and training starts from the baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from featlab.errors import require
from featlab.nets.sr.blocks import ResBlock, bicubic_upsample, conv3x3


def prime_factors(n: int) -> list[int]:
    """Prime factors in ascending order (8 -> [2, 2, 2], 12 -> [2, 2, 3])."""
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


class FactoredPixelShuffle(nn.Sequential):
    """One conv + pixel-shuffle stage per prime factor of ``scale``, each widening by factor^2.

    Small stages keep every conv's output at most ``factor^2 * channels`` wide, and the largest
    factor runs last, at the highest resolution, with the fewest stages after it.
    """

    def __init__(self, channels: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for factor in prime_factors(scale):
            layers += [conv3x3(channels, factor * factor * channels), nn.PixelShuffle(factor)]
        super().__init__(*layers)


class DSRNet(nn.Module):
    """Residual CNN with a pixel-shuffle upsampler and a global bicubic skip.

    Tiny test size: ``DSRNet(scale, base_channels=8, residual_blocks=1)``.
    """

    def __init__(
        self,
        scale: int = 8,
        base_channels: int = 112,
        residual_blocks: int = 16,
        in_channels: int = 3,
        res_scale: float = 0.1,
        bicubic_skip: bool = True,
    ) -> None:
        super().__init__()
        ok = isinstance(scale, int) and not isinstance(scale, bool) and scale >= 1
        require(ok, "data.scale", f"DSR needs a positive integer scale, got {scale!r}")
        require(base_channels > 0, "net.base_channels", f"must be positive, got {base_channels}")
        require(residual_blocks >= 0, "net.residual_blocks", f"must be >= 0, got {residual_blocks}")
        self.scale = scale
        self.bicubic_skip = bicubic_skip
        self.head = conv3x3(in_channels, base_channels)
        self.body = nn.Sequential(*(ResBlock(base_channels, res_scale) for _ in range(residual_blocks)),
                                  conv3x3(base_channels, base_channels))
        self.upsample = FactoredPixelShuffle(base_channels, scale)
        self.tail = conv3x3(base_channels, in_channels)
        if bicubic_skip:  # start close to the bicubic baseline, yet with gradients into every layer
            with torch.no_grad():
                self.tail.weight.mul_(0.1)
                self.tail.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        features = features + self.body(features)
        out = self.tail(self.upsample(features))
        if self.bicubic_skip:
            out = out + bicubic_upsample(x, self.scale)
        return out

"""NAFNet (Chen et al., ECCV 2022): a nonlinear-activation-free U-Net for restoration (scale 1).

Published SIDD denoising model 'NAFNet-SIDD-width32': width 32, encoder blocks [2, 2, 4, 8],
12 middle blocks, decoder blocks [2, 2, 2, 2]. (The GoPro deblurring model is width 64 with
encoder [1, 1, 1, 28], 1 middle block, decoder [1, 1, 1, 1]; both are reachable by arguments.)
Blocks use SimpleGate instead of activations and simplified channel attention; the input is
zero-padded to a multiple of 2^levels, as in the reference, and a global residual adds the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from featlab.nets.sr.blocks import LayerNorm2d, check_scale, conv3x3, pad_to_multiple


class SimpleGate(nn.Module):
    """Split channels in half and multiply: the 'activation' of NAFNet."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Norm -> 1x1 -> depthwise 3x3 -> gate -> channel attention -> 1x1, then a gated FFN;
    both branches enter the residual through learned per-channel scales initialised to zero."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = c * dw_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        ffn = c * ffn_expand
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.gate(self.conv2(self.conv1(self.norm1(x))))
        y = self.conv3(y * self.sca(y))
        x = x + y * self.beta
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return x + y * self.gamma


def _blocks(c: int, n: int, dw_expand: int, ffn_expand: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(c, dw_expand, ffn_expand) for _ in range(n)))


class NAFNet(nn.Module):
    """NAFNet. Tiny test size: ``NAFNet(1, width=4, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))``."""

    supported_scales = (1,)

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 32,
        enc_blocks: Sequence[int] = (2, 2, 4, 8),
        middle_blocks: int = 12,
        dec_blocks: Sequence[int] = (2, 2, 2, 2),
        dw_expand: int = 2,
        ffn_expand: int = 2,
    ) -> None:
        super().__init__()
        self.scale = check_scale("NAFNet", scale, self.supported_scales)
        self.in_channels = in_channels
        enc_blocks, dec_blocks = tuple(enc_blocks), tuple(dec_blocks)  # Hydra passes ListConfig
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(
                f"enc_blocks {list(enc_blocks)} and dec_blocks {list(dec_blocks)} differ in length"
            )
        self.size_multiple = 2 ** len(enc_blocks)
        self.intro = conv3x3(in_channels, width)
        self.ending = conv3x3(width, out_channels)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        c = width
        for n in enc_blocks:
            self.encoders.append(_blocks(c, n, dw_expand, ffn_expand))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = _blocks(c, middle_blocks, dw_expand, ffn_expand)
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(_blocks(c, n, dw_expand, ffn_expand))
        self.residual = in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple, mode="constant")
        x = self.intro(padded)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(up(x) + skip)
        x = self.ending(x)
        if self.residual:
            x = x + padded
        return x[..., :h, :w]

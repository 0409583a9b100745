"""SCUNet (Zhang et al., MIR 2023): a U-Net of Swin-Conv blocks for blind denoising (scale 1).

Published colour model: config [4, 4, 4, 4, 4, 4, 4] (blocks per level: 3 down, body, 3 up),
dim 64, head dim 32, window 8, no stochastic depth. Each Swin-Conv block mixes channels with a
1x1 conv, sends half through a residual conv block and half through a (shifted-)window Swin
block, and fuses them with another 1x1 conv plus a skip. Down/up-sampling are bias-free 2x2
(transposed) convs; the input is replicate-padded to a multiple of 64 (= 2^3 levels x window 8).

Deviations, kept deliberately small: the shared Swin block uses a finite mask value (-100,
bf16-safe) where the reference uses -inf, and shifted windows are always used for odd blocks;
the reference falls back to plain windows when its *training* resolution is no bigger than the
window, a case that never arises for the published 8x8 windows on 256-pixel training patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from featlab.nets.sr.blocks import check_scale, linear_rates, pad_to_multiple
from featlab.nets.sr.swin import SwinBlock, init_transformer_weights


class ConvBlock(nn.Sequential):
    """Bias-free 3x3 conv -> ReLU -> 3x3 conv (the residual is added by the caller)."""

    def __init__(self, c: int) -> None:
        super().__init__(
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
        )


class SwinConvBlock(nn.Module):
    """SCUNet's Swin-Conv (ConvTrans) block: split, conv branch + Swin branch, fuse, skip."""

    def __init__(
        self, conv_dim: int, trans_dim: int, head_dim: int, window: int, shifted: bool, drop_path: float
    ):
        super().__init__()
        self.conv_dim = conv_dim
        dim = conv_dim + trans_dim
        self.conv1_1 = nn.Conv2d(dim, dim, 1)
        self.conv1_2 = nn.Conv2d(dim, dim, 1)
        self.conv_block = ConvBlock(conv_dim)
        shift = window // 2 if shifted else 0
        self.trans_block = SwinBlock(trans_dim, trans_dim // head_dim, window, shift, 4.0, drop_path)

    def forward(self, x: Tensor) -> Tensor:
        conv_x, trans_x = torch.split(self.conv1_1(x), [self.conv_dim, x.shape[1] - self.conv_dim], dim=1)
        conv_x = conv_x + self.conv_block(conv_x)
        t = trans_x.permute(0, 2, 3, 1)
        t = self.trans_block(t, self.trans_block.make_mask(t.shape[1], t.shape[2], t.device))
        res = self.conv1_2(torch.cat([conv_x, t.permute(0, 3, 1, 2)], dim=1))
        return x + res


class SCUNet(nn.Module):
    """Swin-Conv U-Net. Tiny test size: ``SCUNet(1, config=(2,) * 7, dim=8, head_dim=4, window_size=4)``."""

    supported_scales = (1,)

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        out_channels: int = 3,
        config: Sequence[int] = (4, 4, 4, 4, 4, 4, 4),
        dim: int = 64,
        head_dim: int = 32,
        window_size: int = 8,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.scale = check_scale("SCUNet", scale, self.supported_scales)
        self.in_channels = in_channels
        config = tuple(config)  # Hydra passes ListConfig
        if len(config) != 7:
            raise ValueError(f"config needs 7 entries (3 down, body, 3 up), got {list(config)}")
        self.size_multiple = 8 * window_size
        rates = iter(linear_rates(drop_path_rate, sum(config)))

        def level(width: int, n: int) -> list[nn.Module]:
            half = width // 2
            return [
                SwinConvBlock(half, half, head_dim, window_size, i % 2 == 1, next(rates)) for i in range(n)
            ]

        def down(c: int) -> nn.Module:
            return nn.Conv2d(c, 2 * c, 2, stride=2, bias=False)

        def up(c: int) -> nn.Module:
            return nn.ConvTranspose2d(2 * c, c, 2, stride=2, bias=False)

        self.head = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)
        self.down1 = nn.Sequential(*level(dim, config[0]), down(dim))
        self.down2 = nn.Sequential(*level(2 * dim, config[1]), down(2 * dim))
        self.down3 = nn.Sequential(*level(4 * dim, config[2]), down(4 * dim))
        self.body = nn.Sequential(*level(8 * dim, config[3]))
        self.up3 = nn.Sequential(up(4 * dim), *level(4 * dim, config[4]))
        self.up2 = nn.Sequential(up(2 * dim), *level(2 * dim, config[5]))
        self.up1 = nn.Sequential(up(dim), *level(dim, config[6]))
        self.tail = nn.Conv2d(dim, out_channels, 3, padding=1, bias=False)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x1 = self.head(pad_to_multiple(x, self.size_multiple, mode="replicate"))
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        y = self.body(x4)
        y = self.up3(y + x4)
        y = self.up2(y + x3)
        y = self.up1(y + x2)
        return self.tail(y + x1)[..., :h, :w]

"""The DSR network: any integer scale, bicubic start, gradients everywhere."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featlab.errors import ConfigError
from featlab.nets.dsr import DSRNet, prime_factors


@pytest.mark.parametrize(("scale", "side"), [(8, 14), (7, 16), (6, 4)])
def test_output_size_for_any_integer_scale(scale, side):
    net = DSRNet(scale, base_channels=8, residual_blocks=1)
    assert net(torch.rand(2, 3, side, side)).shape == (2, 3, side * scale, side * scale)


def test_prime_factor_stages():
    assert prime_factors(8) == [2, 2, 2] and prime_factors(7) == [7] and prime_factors(12) == [2, 2, 3]
    assert prime_factors(1) == []


def test_starts_near_bicubic_yet_every_layer_gets_gradient():
    torch.manual_seed(0)
    net = DSRNet(4, base_channels=8, residual_blocks=2)
    lr = torch.rand(2, 3, 8, 8)
    out = net(lr)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert (out - bicubic).abs().mean() < 0.05
    out.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_bad_scale_names_the_key():
    with pytest.raises(ConfigError, match="data.scale"):
        DSRNet(0)

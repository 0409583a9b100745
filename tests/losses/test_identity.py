"""Identity loss: zero for identical faces, gradients into the DSR network only."""

from __future__ import annotations

import pytest
import torch

from featlab.losses.identity import IdentityLoss
from featlab.nets.dsr import DSRNet

TINY = "edgeface_tiny_test"


@pytest.fixture(scope="module")
def loss() -> IdentityLoss:
    return IdentityLoss(TINY, pretrained=False)


def test_zero_for_identical_images(loss):
    hr = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    assert loss(hr, hr.clone()).abs().item() < 1e-6
    other = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    assert 0.0 < loss(other, hr).item() <= 2.0


def test_gradients_reach_the_dsr_net_only(loss):
    torch.manual_seed(0)
    net = DSRNet(scale=8, base_channels=8, residual_blocks=1)
    hr = torch.rand(2, 3, 112, 112).requires_grad_(True)
    lr = torch.rand(2, 3, 14, 14)
    loss(net(lr), hr).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    assert hr.grad is None  # the HR embedding is a fixed target (no_grad)

"""Pixel losses and total variation: values on hand-made inputs, clear errors."""

from __future__ import annotations

import pytest
import torch

from featlab.errors import ConfigError
from featlab.losses.pixel import PixelLoss
from featlab.losses.tv import TVLoss

pytestmark = pytest.mark.usefixtures("single_thread")


def test_pixel_losses_match_definitions() -> None:
    pred, target = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert PixelLoss("l1")(pred, target).item() == pytest.approx(0.5)
    assert PixelLoss("mse")(pred, target).item() == pytest.approx(0.25)
    assert PixelLoss("charbonnier", eps=1e-3)(pred, target).item() == pytest.approx((0.25 + 1e-6) ** 0.5)
    assert PixelLoss("charbonnier")(target, target).item() == pytest.approx(1e-3)


def test_pixel_loss_gradient_and_unknown_kind() -> None:
    pred = torch.rand(2, 3, 8, 8, requires_grad=True)
    PixelLoss("charbonnier")(pred, torch.rand(2, 3, 8, 8)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ConfigError) as err:
        PixelLoss("huber")
    assert "huber" in str(err.value) and "charbonnier" in str(err.value) and "l1" in str(err.value)


def test_total_variation() -> None:
    tv = TVLoss()
    assert tv(torch.ones(1, 3, 5, 5)).item() == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs by 1, vertical ones not at all
    assert tv(stripes, None).item() == pytest.approx(1.0)
    assert tv(stripes, torch.rand(1, 1, 4, 4)).item() == pytest.approx(1.0)

import pytest
import torch

from featlab.errors import ConfigError
from featlab.losses.composite import CompositeLoss

L1 = {"_target_": "torch.nn.L1Loss"}
MSE = {"_target_": "torch.nn.MSELoss"}


def test_weighted_sum_matches_hand_computation():
    loss = CompositeLoss.from_config({"pixel": {**L1, "weight": 1.0}, "mse": {**MSE, "weight": 0.5}})
    pred, target = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 2.0)
    total, terms = loss(pred, target)
    assert terms["pixel"].item() == pytest.approx(2.0)
    assert terms["mse"].item() == pytest.approx(0.5 * 4.0)
    assert total.item() == pytest.approx(4.0)


def test_null_and_zero_weight_terms_are_dropped():
    loss = CompositeLoss.from_config({"pixel": {**L1, "weight": 1.0}, "mse": {**MSE, "weight": 0.0},
                                      "tv": None})
    assert list(loss.terms) == ["pixel"]


def test_bad_term_configs_name_the_key():
    with pytest.raises(ConfigError, match="loss.pixel"):
        CompositeLoss.from_config({"pixel": {"weight": 1.0}})
    with pytest.raises(ConfigError, match="no loss term"):
        CompositeLoss.from_config({"pixel": {**L1, "weight": 0.0}})

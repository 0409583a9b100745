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


def test_first_batch_reports_a_term_1000x_another_with_both_magnitudes(caplog):
    loss = CompositeLoss.from_config({"pixel": {**L1, "weight": 1.0}, "mse": {**MSE, "weight": 1e5}})
    pred, target = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1)
    with caplog.at_level("WARNING", logger="featlab.losses.composite"):
        total, _ = loss(pred, target)
    assert torch.isfinite(total)  # warn: training goes on
    message = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "'mse' = 1000" in message and "'pixel' = 0.1" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="featlab.losses.composite"):
        loss(pred, target)  # only the first batch is checked
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_scale_check_error_stops_on_a_non_finite_term():
    loss = CompositeLoss.from_config({"pixel": {**L1, "weight": 1.0}, "mse": {**MSE, "weight": float("inf")},
                                      "scale_check": "error"})
    with pytest.raises(ConfigError, match="'mse' is (inf|nan)"):
        loss(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1))


def test_balanced_terms_pass_and_bad_scale_check_values_are_named():
    loss = CompositeLoss.from_config({"pixel": {**L1, "weight": 1.0}, "mse": {**MSE, "weight": 10.0},
                                      "scale_check": "error"})
    loss(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1))
    assert loss.first_batch_scales == pytest.approx({"pixel": 0.1, "mse": 0.1})
    with pytest.raises(ConfigError, match="loss.scale_check"):
        CompositeLoss.from_config({"pixel": {**L1, "weight": 1.0}, "scale_check": "loud"})

"""feature_norm: parameter-free layernorm, standardize with frozen data statistics, feature_stats."""

from __future__ import annotations

import pytest
import torch

from featlab.backbones import create
from featlab.errors import ConfigError


def test_layernorm_is_zero_mean_unit_std_per_position() -> None:
    torch.manual_seed(0)
    raw = create("resnet_tiny_test", ["stages.2", "pool"], pretrained=False)
    fx = create("resnet_tiny_test", ["stages.2", "pool"], pretrained=False, feature_norm="layernorm")
    fx.load_state_dict(raw.state_dict())
    x = torch.rand(2, 3, 64, 64)
    before, out = raw(x)["stages.2"], fx(x)
    spatial = out["stages.2"]
    assert torch.allclose(spatial.mean(dim=1), torch.zeros(()), atol=1e-5)
    # unit variance wherever the raw feature varies across channels (eps = 1e-6 damps the rest)
    var_before = before.var(dim=1, unbiased=False)
    expected = var_before / (var_before + 1e-6)
    torch.testing.assert_close(spatial.var(dim=1, unbiased=False), expected, atol=1e-4, rtol=1e-4)
    assert (var_before > 1e-3).float().mean() > 0.9  # so the check is mostly "= 1"
    assert torch.allclose(out["pool"].mean(dim=1), torch.zeros(()), atol=1e-5)
    assert not list(fx.standardizers.parameters())


def test_standardize_needs_fitting_then_freezes() -> None:
    torch.manual_seed(0)
    fx = create("resnet_tiny_test", ["stages.1", "pool"], pretrained=False, feature_norm="standardize")
    data = [torch.rand(4, 3, 64, 64) for _ in range(3)]
    with pytest.raises(ConfigError, match="fit_standardization"):
        fx(data[0])
    fx.fit_standardization(data)
    assert fx.statistics_frozen
    raw = torch.cat([fx.raw_features(x)["stages.1"] for x in data]).double()
    mean = raw.mean(dim=(0, 2, 3), keepdim=True)
    var = raw.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    standardized = torch.cat([fx(x)["stages.1"] for x in data]).double()
    std = (var + 1e-6).sqrt()
    std = std.clamp_min(0.1 * std.flatten().median())  # dead channels' std is floored
    assert torch.allclose(standardized, (raw - mean) / std, atol=1e-4)
    mean_before = fx.standardizers["stages_1"].mean.clone()
    fx.freeze_statistics()  # idempotent
    with pytest.raises(RuntimeError, match="frozen"):
        fx.update_statistics(torch.rand(2, 3, 64, 64))
    fx(torch.rand(2, 3, 64, 64) * 5)
    assert torch.equal(fx.standardizers["stages_1"].mean, mean_before)
    state = fx.statistics_state()
    assert set(state) == {"stages.1", "pool"} and state["pool"]["count"].item() == 12


def test_standardize_statistics_survive_a_state_dict_roundtrip() -> None:
    fx = create("vit_tiny_test", ["last"], pretrained=False, feature_norm="standardize")
    fx.update_statistics(torch.rand(2, 3, 64, 64))
    fx.freeze_statistics()
    other = create("vit_tiny_test", ["last"], pretrained=False, feature_norm="standardize")
    other.load_state_dict(fx.state_dict())
    x = torch.rand(1, 3, 64, 64)
    assert other.statistics_frozen and torch.allclose(other(x)["last"], fx(x)["last"])


def test_feature_stats_reports_raw_scale() -> None:
    fx = create("resnet_tiny_test", ["stages.0", "last"], pretrained=False)
    out = fx.raw_features(torch.rand(2, 3, 64, 64))
    stats = fx.feature_stats(out)
    for layer, (mean, std) in stats.items():
        assert torch.allclose(mean, out[layer].mean()) and torch.allclose(std, out[layer].std())


def test_dead_channels_do_not_blow_up_standardized_features() -> None:
    from featlab.backbones.featnorm import ChannelStandardizer

    stats = ChannelStandardizer(3)
    train = torch.randn(64, 3, 4, 4) * torch.tensor([1.0, 2.0, 0.0]).view(1, 3, 1, 1)  # channel 2 never fires
    stats.update(train)
    stats.freeze(sync=False)
    assert stats.std[2] == pytest.approx(0.1 * float(stats.std.median()))
    assert stats(torch.ones(1, 3, 1, 1))[0, 2].item() < 20  # not 1 / sqrt(eps) = 1000

"""feature_norm: the extractor's parameter-free layernorm, standardize with frozen data statistics, feature_stats."""

from __future__ import annotations

import pytest
import torch

from featlab.backbones import create
from featlab.backbones.featnorm import FeatureNormalizer
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
    assert fx.state_dict().keys() == raw.state_dict().keys()  # parameter-free: nothing to store


def test_extractor_refuses_standardize_at_construction() -> None:
    """Standardising needs statistics fitted on data, which the owner of a FeatureNormalizer does."""
    with pytest.raises(ConfigError, match=r"loss.perceptual.feature_norm: .*'standardize'.*layernorm, none"):
        create("resnet_tiny_test", ["last"], pretrained=False, feature_norm="standardize",
               config_key="loss.perceptual")


def test_standardize_statistics_survive_a_state_dict_roundtrip() -> None:
    norm = FeatureNormalizer(channels=8, mode="standardize")
    norm.update(torch.randn(4, 8, 5, 5) * 3 + 1)
    norm.freeze(sync=False)
    other = FeatureNormalizer(channels=8, mode="standardize")
    other.load_state_dict(norm.state_dict())
    x = torch.randn(2, 8, 5, 5)
    assert other.is_frozen and torch.equal(other(x), norm(x))


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

"""The fixed feature distance: per image, under the SR protocol, one criterion for every run."""

from __future__ import annotations

import pytest
import torch

from featlab.errors import ConfigError
from featlab.losses.perceptual import PerceptualLoss
from featlab.metrics.feature_distance import build_feature_distance
from featlab.metrics.sr import SRMetrics

pytestmark = pytest.mark.usefixtures("single_thread")
CONFIG = {"backbone": "vit_tiny_test", "layers": ["feat2", "last"], "layer_weights": [1.0, 0.5],
          "normalize": "target", "pretrained": False, "weight": 0.1}


def test_each_image_is_the_perceptual_loss_of_that_image_alone():
    torch.manual_seed(0)
    scorer = build_feature_distance(CONFIG)
    reference = PerceptualLoss(**{k: v for k, v in CONFIG.items() if k != "weight"})
    reference.load_state_dict(scorer.distance.state_dict())
    hr = torch.rand(3, 3, 40, 40)
    sr = (hr + 0.1 * torch.randn_like(hr)).clamp(0, 1)
    values = scorer(sr, hr, crop_border=4)
    assert values.shape == (3,)
    # the protocol: 8-bit quantised, border cropped, each image normalised by its own target magnitude
    q = lambda x: x.mul(255).round().div(255)[..., 4:-4, 4:-4]  # noqa: E731
    expected = torch.stack([reference(q(sr[i:i + 1]), q(hr[i:i + 1])) for i in range(3)])
    assert torch.allclose(values, expected, rtol=1e-5, atol=1e-7)
    assert scorer(hr, hr.clone(), crop_border=4).abs().max().item() < 1e-6
    assert values.min().item() > 0


def test_sr_metrics_report_the_mean_and_keep_the_scorer_out_of_checkpoints():
    torch.manual_seed(1)
    scorer = build_feature_distance(CONFIG)
    metric = SRMetrics(crop_border=2, scorers={"feature_distance": scorer})
    hr = torch.rand(4, 3, 32, 32)
    sr = (hr + 0.2 * torch.randn_like(hr)).clamp(0, 1)
    metric.update(sr[:2], hr[:2])
    metric.update(sr[2:], hr[2:])
    result = metric.compute()
    assert result["feature_distance"].item() == pytest.approx(scorer(sr, hr, crop_border=2).mean().item(), rel=1e-5)
    assert "lpips" not in result
    assert not any("distance." in name or "extractor" in name for name in metric.state_dict())
    with pytest.raises(ValueError, match="'psnr' is taken"):
        SRMetrics(scorers={"psnr": scorer})


def test_off_and_bad_settings():
    assert build_feature_distance(None) is None
    with pytest.raises(ConfigError, match=r"^task.eval_feature_distance: needs backbone and layers"):
        build_feature_distance({"backbone": "vit_tiny_test"})
    with pytest.raises(ConfigError, match=r"^task.eval_feature_distance: takes PerceptualLoss's keys"):
        build_feature_distance({**CONFIG, "layerz": ["last"]})
    with pytest.raises(ConfigError, match=r"^task.eval_feature_distance.distance"):
        build_feature_distance({**CONFIG, "distance": "l3"})

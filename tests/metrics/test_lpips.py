"""LPIPS only from files on disk: one skip line offline, the formula when the weights are there."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
import torchvision

from featlab.errors import ConfigError
from featlab.metrics.lpips import build_lpips, heads_file
from featlab.metrics.sr import SRMetrics


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch.hub's folder without any downloaded weights, as on the offline machines."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A torchvision AlexNet state dict on disk (random weights: the formula does not care)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_missing_weights_skip_lpips_with_one_line_and_no_download(empty_hub, caplog, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("LPIPS tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with caplog.at_level(logging.INFO, logger="featlab.metrics.lpips"):
        assert build_lpips("alex") is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("LPIPS skipped: the alex ImageNet weights are not on disk")
    assert str(empty_hub / "checkpoints" / "alexnet-owt-7be5be79.pth") in line
    assert "task.eval_lpips.backbone_weights" in line and "\n" not in line
    metric = SRMetrics()
    metric.update(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert "lpips" not in metric.compute()  # absent, not a made-up number


def test_bad_lpips_settings_are_one_line_naming_the_key(tmp_path, alexnet_file):
    with pytest.raises(ConfigError, match=r"task.eval_lpips.net: LPIPS nets are alex, vgg, squeeze"):
        build_lpips("resnet")
    with pytest.raises(ConfigError, match=r"task.eval_lpips.backbone_weights: .*does not exist"):
        build_lpips("alex", backbone_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match=r"task.eval_lpips.backbone_weights: .* is not a torchvision vgg16"):
        build_lpips("vgg", backbone_weights=str(alexnet_file))


def reference_lpips(x0: torch.Tensor, x1: torch.Tensor, state: dict) -> torch.Tensor:
    """LPIPS v0.1 written from the paper: AlexNet relu1..relu5 of the [-1, 1] inputs after the
    fixed scaling layer, channel-unit-normalised, squared differences weighted by the heads,
    averaged over space and summed over layers."""
    alex = torchvision.models.alexnet(weights=None)
    alex.load_state_dict(state)
    heads = torch.load(heads_file("alex"), map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = (1, 4, 7, 9, 11)
    h0, h1 = (((2 * x - 1) - shift) / scale for x in (x0, x1))
    total = torch.zeros(x0.shape[0])
    layer = 0
    for index, module in enumerate(alex.features[:12]):
        h0, h1 = module(h0), module(h1)
        if index in taps:
            n0 = h0 / (h0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            n1 = h1 / (h1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            weighted = F.conv2d((n0 - n1) ** 2, heads[f"lin{layer}.model.1.weight"])
            total += weighted.mean(dim=(1, 2, 3))
            layer += 1
    return total


def test_lpips_from_local_files_matches_the_formula(alexnet_file, empty_hub):
    scorer = build_lpips("alex", backbone_weights=str(alexnet_file))
    assert scorer is not None
    generator = torch.Generator().manual_seed(1)
    hr = torch.randint(0, 256, (2, 3, 40, 36), generator=generator).float() / 255  # 8-bit levels
    sr = (hr + torch.randint(-40, 41, hr.shape, generator=generator) / 255).clamp(0, 1)
    state = torch.load(alexnet_file, weights_only=True)
    with torch.no_grad():
        expected = reference_lpips(sr, hr, state)
    values = scorer(sr, hr)
    assert values.shape == (2,) and torch.all(expected > 0.001)
    assert torch.allclose(values, expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(scorer(hr, hr), torch.zeros(2))
    metric = SRMetrics(crop_border=2, lpips=scorer)
    metric.update(sr, hr)
    assert metric.compute()["lpips"].item() == pytest.approx(scorer(sr, hr, crop_border=2).mean().item(), rel=1e-6)
    assert not any("lpips" in name or "model" in name for name in metric.state_dict())  # never checkpointed

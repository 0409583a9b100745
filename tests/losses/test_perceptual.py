"""Perceptual loss: zero for equal images, gradient to the prediction only, one pass for all layers."""

from __future__ import annotations

import pytest
import torch

from featlab.errors import ConfigError
from featlab.losses.perceptual import PerceptualLoss

pytestmark = pytest.mark.usefixtures("single_thread")


def _loss(**kwargs) -> PerceptualLoss:
    options = {"backbone": "vit_tiny_test", "layers": ["feat2", "last"], "pretrained": False, **kwargs}
    return PerceptualLoss(**options)


def test_zero_for_identical_images() -> None:
    image = torch.rand(2, 3, 64, 64)
    for distance in ("l1", "l2", "cosine"):
        assert _loss(distance=distance)(image, image.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_prediction_gets_gradient_backbone_does_not() -> None:
    loss = _loss(layer_weights=[1.0, 0.5])
    pred = torch.rand(2, 3, 64, 64, requires_grad=True)
    target = torch.rand(2, 3, 64, 64, requires_grad=True)
    value = loss(pred, target)
    assert value.item() > 0
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None  # the target side runs under no_grad
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())


def test_all_layers_from_one_pass_per_image_set() -> None:
    loss = _loss(backbone="vit_tiny_test", layers=["block0", "feat2", "last"])
    counts = [0] * len(loss.extractor.model.blocks)
    for i, block in enumerate(loss.extractor.model.blocks):
        block.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    loss(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert counts == [2, 2, 2, 2]  # target once + prediction once


def test_weighted_sum_over_layers_and_cnn_backbone() -> None:
    pred, target = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)

    def value(layers: list[str], weights: list[float] | None = None) -> torch.Tensor:
        torch.manual_seed(0)  # the same random VGG weights for every instance
        return PerceptualLoss("vgg_tiny_test", layers, weights, pretrained=False)(pred, target)

    both = value(["relu1_2", "relu3_4"], [2.0, 0.5])
    first, second = value(["relu1_2"]), value(["relu3_4"])
    assert both.item() == pytest.approx(2.0 * first.item() + 0.5 * second.item(), rel=1e-5)


def test_stays_frozen_inside_a_training_module() -> None:
    loss = _loss()
    task = torch.nn.ModuleDict({"loss": loss})
    task.train()
    assert not loss.extractor.training and not any(m.training for m in loss.extractor.modules())


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        _loss(layer_weights=[1.0])
    assert str(err.value).startswith("loss.perceptual.layer_weights")
    with pytest.raises(ConfigError) as err:
        _loss(layers=["feat9"])
    text = str(err.value)
    assert text.startswith("loss.perceptual.layers") and "feat9" in text and "feat4" in text and "cls" in text
    with pytest.raises(ConfigError, match="loss.perceptual.backbone"):
        _loss(backbone="vgg16")
    with pytest.raises(ConfigError, match="loss.perceptual.distance"):
        _loss(distance="l3")


def test_bf16_autocast() -> None:
    loss = PerceptualLoss("resnet_tiny_test", ["stages.1", "stages.2"], pretrained=False)
    pred = torch.rand(1, 3, 64, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(pred, torch.rand(1, 3, 64, 64))
    value.backward()
    assert torch.isfinite(value) and pred.grad.abs().sum() > 0


@pytest.mark.parametrize(("loss", "backbone", "layers", "weights"), [
    ("perceptual_dino", "dino_vits16", ["last"], [1.0]),
    ("perceptual_dino_multi", "dino_vits16", ["feat2", "last"], [1.0, 0.5]),
    ("perceptual_convnext", "convnext_tiny", ["stages.1", "stages.2"], [1.0, 0.7]),
    ("perceptual_vgg", "vgg19", ["relu2_2", "relu3_4", "relu4_4", "relu5_4"], [0.1, 0.1, 1.0, 1.0]),
])
def test_perceptual_configs_hold_the_published_layers_and_weights(loss, backbone, layers, weights):
    from featlab.config import compose

    term = compose(["experiment=sisr_l1", f"loss={loss}"]).loss.perceptual
    assert (term.backbone, list(term.layers), term.weight, term.normalize) == (backbone, layers, 0.1, "target")
    assert list(term.get("layer_weights") or [1.0] * len(layers)) == weights


@pytest.mark.parametrize("normalize", ["target", "unit"])
@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_calibrated_loss_ignores_the_backbones_feature_scale(normalize, distance) -> None:
    """The point of calibration: features x 10 (another backbone's scale) leave the loss unchanged."""
    from featlab.losses.perceptual import calibrated_distance

    torch.manual_seed(0)
    pred, target = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    base = calibrated_distance(pred, target, distance, normalize)
    torch.testing.assert_close(calibrated_distance(10 * pred, 10 * target, distance, normalize), base)
    raw = calibrated_distance(pred, target, distance, "none")
    assert not torch.allclose(calibrated_distance(10 * pred, 10 * target, distance, "none"), raw)


def test_target_normalisation_is_the_relative_feature_error() -> None:
    from featlab.losses.perceptual import calibrated_distance

    target = torch.full((1, 4, 2, 2), 2.0)
    pred = torch.full((1, 4, 2, 2), 1.5)
    assert calibrated_distance(pred, target, "l1", "target").item() == pytest.approx(0.25)
    assert calibrated_distance(pred, target, "l2", "target").item() == pytest.approx(0.0625)
    assert calibrated_distance(torch.zeros_like(target), target, "l1", "target").item() == pytest.approx(1.0)
    # unit: LPIPS's normalisation, so parallel feature vectors are at distance zero
    assert calibrated_distance(3 * target, target, "l2", "unit").item() == pytest.approx(0.0, abs=1e-12)


def test_calibrated_loss_still_gives_the_prediction_a_gradient() -> None:
    loss = _loss(normalize="target")
    pred = torch.rand(1, 3, 64, 64, requires_grad=True)
    loss(pred, torch.rand(1, 3, 64, 64)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_unknown_normalisation_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="none, target, unit"):
        _loss(normalize="lpips")

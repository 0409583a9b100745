"""``timm/<model>`` backbones: timm's own layers (feature_info / ViT taps), one truncated pass, clear errors."""

from __future__ import annotations

import pytest
import torch

from featlab.backbones import create, get_spec
from featlab.errors import ConfigError

RESNET = ["act1", "layer1", "layer2", "layer3", "layer4", "feat1", "feat2", "feat3", "feat4", "feat5", "last", "pool"]


def test_resnet_layers_are_timm_feature_info_and_match_the_preset() -> None:
    fx = create("timm/resnet18", ["layer1", "feat3", "last", "pool"], pretrained=False, input_size=64)
    assert fx.valid_layers == RESNET and fx.family == "cnn" and fx.embed_dim == 512
    out = fx(torch.rand(2, 3, 40, 40))  # resized to 64 inside
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "layer1": (2, 64, 16, 16), "feat3": (2, 128, 8, 8), "last": (2, 512, 2, 2), "pool": (2, 512)}
    assert fx.strides == {"layer1": 4, "feat3": 8, "last": 32, "pool": None}
    # the same weights in the preset: timm's layer2 is the preset's stages.1, timm's pre-logits its pool
    preset = create("resnet18", ["stages.1", "pool"], pretrained=False, input_size=64)
    preset.model.load_state_dict(fx.model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    ours, theirs = fx(x), preset(x)
    assert torch.allclose(ours["feat3"], theirs["stages.1"], atol=1e-5)
    assert torch.allclose(ours["pool"], theirs["pool"], atol=1e-5)


def test_truncation_is_timms_prune_and_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    fx = create("timm/resnet18", ["layer2", "act1"], pretrained=False, input_size=32)
    assert not any(k.startswith(("layer3", "layer4", "fc")) for k in fx.model.state_dict())
    calls = []
    original = fx.model.forward_intermediates
    monkeypatch.setattr(fx.model, "forward_intermediates", lambda *a, **k: calls.append(k) or original(*a, **k))
    out = fx(torch.rand(1, 3, 32, 32))
    assert list(out) == ["layer2", "act1"] and len(calls) == 1 and calls[0]["stop_early"]
    assert not fx.taps.can_compute("layer3") and not fx.taps.can_compute("pool")
    with pytest.raises(ConfigError, match="global_features needs 'pool'"):
        fx.global_features(torch.rand(1, 3, 32, 32))


def test_vision_transformers_keep_featlabs_vit_layer_names() -> None:
    fx = create("timm/vit_tiny_patch16_224", ["block1", "feat1", "last", "cls"], pretrained=False, input_size=32)
    assert fx.family == "vit" and fx.patch_size == 16 and get_spec("timm/vit_tiny_patch16_224").kind == "vit"
    assert fx.valid_layers == [*(f"block{i}" for i in range(12)), "feat1", "feat2", "feat3", "feat4", "last", "cls"]
    out = fx(torch.rand(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "block1": (2, 192, 2, 2), "feat1": (2, 192, 2, 2), "last": (2, 192, 2, 2), "cls": (2, 192)}
    shallow = create("timm/vit_tiny_patch16_224", ["feat1"], pretrained=False, input_size=32)
    assert len(shallow.model.blocks) == 3  # feat1 = block2: pruned by prune_intermediate_layers


@pytest.mark.parametrize(("name", "layers", "shapes"), [
    ("timm/convnext_atto", ["stages.1", "feat4", "pool"], [(80, 8), (320, 2), (320,)]),
    ("timm/efficientnet_b0", ["blocks.1", "last", "pool"], [(24, 16), (320, 2), (1280,)]),
])
def test_other_families(name: str, layers: list[str], shapes: list[tuple[int, ...]]) -> None:
    with torch.device("meta"):  # shapes only: no compute
        fx = create(name, layers, pretrained=False, input_size=64)
        out = fx(torch.zeros(1, 3, 64, 64))
    for (layer, feature), shape in zip(out.items(), shapes):
        channels, *side = shape
        assert feature.shape == (1, channels, *side * 2), layer


def test_pretrained_tag_is_the_named_or_default_one() -> None:
    assert get_spec("timm/resnet50.tv_in1k").timm_name == "resnet50.tv_in1k"
    assert get_spec("timm/resnet50").timm_name == "resnet50.a1_in1k"  # timm's default weights
    assert get_spec("timm/resnet200").pretrained_tag is None


@pytest.mark.parametrize(("name", "needles"), [
    ("timm/resnet19x", ["backbone.name: unknown timm model 'resnet19x'", "resnet18"]),
    ("timm/resnet50.nope", ["backbone.name: timm has no weights 'nope' for resnet50", "a1_in1k"]),
    ("resnet7", ["backbone.name: unknown backbone 'resnet7'", "timm/<any timm model>"]),
])
def test_bad_names_are_one_line(name: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        create(name, pretrained=False)
    assert all(n in str(err.value) for n in needles) and "\n" not in str(err.value)


def test_bad_layer_and_missing_weights_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^loss.perceptual.layers: unknown layer 'stages.9' .*Valid: act1, layer1"):
        create("timm/resnet18", ["stages.9"], pretrained=False, config_key="loss.perceptual")
    with pytest.raises(ConfigError, match=r"^backbone.pretrained: timm/resnet200 has no pretrained weights; set pre"):
        create("timm/resnet200")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("featlab.backbones.hub.cached_weight_file", lambda *a: None)
    with pytest.raises(ConfigError, match=r"^backbone.pretrained: no weights for timm/convnext_small .*pretrained=false"):
        create("timm/convnext_small")

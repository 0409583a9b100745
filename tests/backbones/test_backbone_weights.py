"""Weights: offline errors (no network touched), local checkpoints, save_backbone, real EfficientNet."""

from __future__ import annotations

import time

import pytest
import timm
import torch

from featlab.backbones import create, effnet, hub, load_checkpoint_file, save_backbone
from featlab.errors import ConfigError


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "cached_weight_file", lambda *a, **k: None)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(hub, "_download", lambda *a, **k: pytest.fail("must not download"))


def test_pretrained_without_cache_or_network_fails_fast_with_both_ways_out(offline: None) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        create("dino_vits16", ["last"], pretrained=True)
    text = str(err.value)
    assert time.perf_counter() - start < 1.0
    assert "pretrained=false" in text and "checkpoint" in text and "dino_vits16" in text and "\n" not in text


def test_test_sizes_have_no_pretrained_weights() -> None:
    with pytest.raises(ConfigError, match="pretrained=false"):
        create("vit_tiny_test", pretrained=True)


def test_pretrained_loads_from_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    reference = timm.create_model("resnet18").eval()  # stands in for downloaded tv_in1k weights
    path = tmp_path / "model.pth"
    torch.save(reference.state_dict(), path)
    monkeypatch.setattr(hub, "cached_weight_file", lambda *a, **k: str(path))
    fx = create("resnet18", ["pool"], pretrained=True, resize=False)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(fx.prepare(x)), pre_logits=True)
    assert torch.allclose(fx(x)["pool"], expected, atol=1e-5)


def test_checkpoint_roundtrip_via_save_backbone(tmp_path) -> None:
    student = create("vit_tiny_test", ["cls"], pretrained=False, trainable=True, drop_path_rate=0.1)
    with torch.no_grad():
        student.model.cls_token.add_(1.0)  # differs from any fresh init
    path = save_backbone(student, tmp_path / "teacher.pt")
    x = torch.rand(2, 3, 64, 64)
    student.eval()
    expected = student(x)["cls"]
    by_name = create("vit_tiny_test", ["cls", "feat1"], checkpoint=str(path))
    from_file = create("checkpoint", ["cls"], checkpoint=str(path))
    assert from_file.name == "vit_tiny_test"
    assert torch.allclose(by_name(x)["cls"], expected, atol=1e-6)
    assert torch.allclose(from_file.global_features(x), expected, atol=1e-6)


def test_training_checkpoint_layouts(tmp_path) -> None:
    source = create("resnet_tiny_test", ["last"], pretrained=False)
    state = source.model.state_dict()
    lightning = {
        "state_dict": {
            **{f"teacher.backbone.model.{k}": v for k, v in state.items()},
            **{f"student.backbone.model.{k}": torch.zeros_like(v) for k, v in state.items()},
        },
        "epoch": 3,
    }
    ddp = {"model": {f"module._orig_mod.{k}": v for k, v in state.items()}, "optimizer": {}}
    x = torch.rand(1, 3, 64, 64)
    for i, payload in enumerate([lightning, ddp]):
        path = tmp_path / f"ckpt{i}.pt"
        torch.save(payload, path)
        assert set(load_checkpoint_file(path)) == set(state)
        loaded = create("resnet_tiny_test", ["last"], checkpoint=str(path))
        assert torch.allclose(loaded(x)["last"], source(x)["last"])


def test_mismatched_architecture_lists_differing_keys(tmp_path) -> None:
    path = save_backbone(create("resnet_tiny_test", ["last"], pretrained=False), tmp_path / "resnet.pt")
    with pytest.raises(ConfigError) as err:
        create("vit_tiny_test", ["last"], checkpoint=str(path))
    text = str(err.value)
    assert text.startswith("backbone.checkpoint") and "missing" in text and "unexpected" in text
    assert "cls_token" in text and "conv1.0.weight" in text
    truncated = save_backbone(create("vit_tiny_test", ["block0"], pretrained=False), tmp_path / "t.pt")
    with pytest.raises(ConfigError, match="missing .*blocks.1"):
        create("vit_tiny_test", ["last"], checkpoint=str(truncated))
    with pytest.raises(ConfigError, match="does not record"):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "plain.pt")
        create("checkpoint", checkpoint=str(tmp_path / "plain.pt"))


def test_efficientnet_lite0_has_the_real_imagenet_weights() -> None:
    from skimage import data

    weights = effnet.package_state_dict()
    classifier = timm.create_model("tf_efficientnet_lite0").eval()
    classifier.load_state_dict(weights)
    fx = create("efficientnet_lite0", ["stages.2", "pool"], pretrained=True)
    for key, value in fx.model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    cat = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        x = fx.prepare(cat)  # mean = std = 0.5, 224 px
        probs = classifier(x).softmax(-1)[0]
        pooled = fx(cat)["pool"]
        expected = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
    assert probs.argmax().item() in range(281, 286)  # ImageNet domestic cats
    assert probs[281:286].sum() > 0.8
    assert torch.allclose(pooled, expected, atol=1e-5)


def test_efficientnet_without_its_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(effnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as err:
        create("efficientnet_lite0", pretrained=True)
    text = str(err.value)
    assert "[effnet]" in text and "pretrained=false" in text and "checkpoint" in text


def test_efficientnet_truncated_early_still_loads_the_package_weights() -> None:
    """Truncation after stages.1 drops later blocks; their package keys must be ignored, not rejected."""
    weights = effnet.package_state_dict()
    fx = create("efficientnet_lite0", ["stages.1"], pretrained=True)
    state = fx.model.state_dict()
    assert not any(k.startswith("blocks.3") for k in state)
    for key, value in state.items():
        assert torch.equal(value, weights[key]), key

"""One pass, truncation, frozen behaviour, gradients and resizing of FeatureExtractor (tiny sizes)."""

from __future__ import annotations

import pytest
import torch

from featlab.backbones import FeatureExtractor, create
from featlab.errors import ConfigError


def _count_calls(modules) -> list[int]:
    counts = [0] * len(modules)
    for i, module in enumerate(modules):
        module.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def test_vit_small_one_pass_for_all_layers() -> None:
    with torch.device("meta"):  # shapes and hook calls only: a real ViT-S init costs seconds
        fx = create("dino_vits16", ["feat2", "last"], pretrained=False)
        counts = _count_calls(fx.model.blocks)
        out = fx(torch.rand(1, 3, 224, 224))
    assert counts == [1] * 12
    assert out["feat2"].shape == out["last"].shape == (1, 384, 14, 14)


def test_feat_alias_is_the_block_output() -> None:
    fx = create("vit_tiny_test", ["block1", "feat2", "feat4", "block3"], pretrained=False)
    counts = _count_calls(fx.model.blocks)
    out = fx(torch.rand(2, 3, 64, 64))
    assert counts == [1, 1, 1, 1]
    assert torch.equal(out["feat2"], out["block1"]) and torch.equal(out["feat4"], out["block3"])


def test_vit_truncation_drops_later_blocks_norm_and_head() -> None:
    fx = create("vit_tiny_test", ["block1"], pretrained=False)
    assert len(fx.model.blocks) == 2
    names = [n for n, _ in fx.model.named_parameters()]
    assert not any(n.startswith(("norm.", "head.", "blocks.2.")) for n in names)
    assert fx(torch.rand(1, 3, 64, 64))["block1"].shape == (1, 32, 4, 4)
    with pytest.raises(ConfigError, match="cls"):
        fx.global_features(torch.rand(1, 3, 64, 64))


def test_cnn_truncation_and_pool() -> None:
    fx = create("resnet_tiny_test", ["stages.1"], pretrained=False)
    names = [n for n, _ in fx.model.named_parameters()]
    assert any(n.startswith("layer2.") for n in names)
    assert not any(n.startswith(("layer3.", "layer4.", "fc.")) for n in names)
    full = create("resnet_tiny_test", ["stages.1", "pool"], pretrained=False)
    x = torch.rand(2, 3, 64, 64)
    out = full(x)
    assert out["pool"].shape == (2, 64) and torch.allclose(full.global_features(x), out["pool"])
    assert torch.allclose(out["pool"], full(x)["pool"])


def test_vgg_truncation_stops_at_the_deepest_relu() -> None:
    fx = create("vgg_tiny_test", ["relu1_2", "relu2_2"], pretrained=False, resize=False)
    assert len(fx.model.features) == 9  # conv relu conv relu pool conv relu conv relu
    out = fx(torch.rand(1, 3, 32, 32))
    assert out["relu1_2"].shape == (1, 8, 32, 32) and out["relu2_2"].shape == (1, 16, 16, 16)
    assert fx.strides == {"relu1_2": 1, "relu2_2": 2}


def test_frozen_gradients_reach_input_not_weights() -> None:
    fx = create("vit_tiny_test", ["feat2", "cls"], pretrained=False)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    out = fx(x)
    (out["feat2"].square().mean() + out["cls"].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in fx.parameters())


def test_frozen_stays_in_eval_mode() -> None:
    fx = create("resnet_tiny_test", ["stages.2"], pretrained=False)
    parent = torch.nn.Sequential(fx)
    parent.train()
    assert not fx.training and not any(m.training for m in fx.modules())
    trainable = create("resnet_tiny_test", ["stages.2"], pretrained=False, trainable=True, drop_path_rate=0.1)
    trainable.train()
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())


def test_resize_and_patch_multiples() -> None:
    fx = create("vit_tiny_test", ["last"], pretrained=False)
    assert fx(torch.rand(1, 3, 100, 80))["last"].shape == (1, 32, 4, 4)
    raw = create("vit_tiny_test", ["last", "cls"], pretrained=False, resize=False)
    assert raw(torch.rand(1, 3, 96, 64))["last"].shape == (1, 32, 6, 4)
    with pytest.raises(ConfigError, match="multiples of its patch size 16"):
        raw(torch.rand(1, 3, 72, 64))


def test_prepare_applies_backbone_mean_std() -> None:
    fx = create("resnet_tiny_test", pretrained=False, resize=False)
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # timm's default for resnets
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(fx.prepare(x), (x - mean) / std)


def test_channels_last_and_bf16_autocast() -> None:
    fx = create("resnet_tiny_test", ["stages.1", "last"], pretrained=False)
    x = torch.rand(2, 3, 64, 64)
    ref = fx(x)
    fx_cl = fx.to(memory_format=torch.channels_last)
    out = fx_cl(x.contiguous(memory_format=torch.channels_last))
    assert all(torch.allclose(out[k], ref[k], atol=1e-5) for k in ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fx(x)
    assert low["last"].dtype == torch.bfloat16
    assert torch.allclose(low["last"].float(), ref["last"], atol=0.1, rtol=0.1)


def test_is_a_module_with_documented_attributes() -> None:
    fx = create("vit_tiny_test", ["feat1", "cls"], pretrained=False)
    assert isinstance(fx, FeatureExtractor) and isinstance(fx, torch.nn.Module)
    assert fx.name == "vit_tiny_test" and fx.family == "vit" and fx.patch_size == 16
    assert fx.channels == {"feat1": 32, "cls": 32} and fx.embed_dim == 32
    assert fx.global_features(torch.rand(3, 3, 64, 64)).shape == (3, 32)


@pytest.mark.parametrize(
    "name, layers", [("vit_tiny_test", ["feat2", "last", "cls"]), ("resnet_tiny_test", ["stages.1", "pool"])]
)
def test_compiles_without_graph_breaks(name: str, layers: list[str]) -> None:
    fx = create(name, layers, pretrained=False, feature_norm="layernorm")
    x = torch.rand(2, 3, 64, 64)
    compiled = torch.compile(fx, backend="eager", fullgraph=True)  # tracing only: no C++ toolchain needed
    out, ref = compiled(x), fx(x)
    assert all(torch.allclose(out[k], ref[k], atol=1e-5) for k in layers)

"""Every registered name builds with its documented layer table (on the meta device: no compute)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from featlab.backbones import available, create, get_spec
from featlab.backbones.vit import quarter_ends
from featlab.errors import ConfigError

VGG_RELUS = [
    "relu1_1",
    "relu1_2",
    "relu2_1",
    "relu2_2",
    "relu3_1",
    "relu3_2",
    "relu3_3",
    "relu3_4",
    "relu4_1",
    "relu4_2",
    "relu4_3",
    "relu4_4",
    "relu5_1",
    "relu5_2",
    "relu5_3",
    "relu5_4",
]
CNN = ["stages.0", "stages.1", "stages.2", "stages.3", "last", "pool"]


def _vit(blocks: int) -> list[str]:
    return [f"block{i}" for i in range(blocks)] + ["feat1", "feat2", "feat3", "feat4", "last", "cls"]


# name -> (valid layers, {layer: channels}, embed_dim, input_size, grid side of `last` at input_size)
TABLE = {
    "dinov2_vits14": (_vit(12), {"feat1": 384, "last": 384, "cls": 384}, 384, 224, 16),
    "dino_vits16": (_vit(12), {"block0": 384, "last": 384}, 384, 224, 14),
    "dino_vits8": (_vit(12), {"last": 384}, 384, 224, 28),
    "dino_vitb16": (_vit(12), {"feat4": 768}, 768, 224, 14),
    "dino_vitb8": (_vit(12), {"last": 768}, 768, 224, 28),
    "clip_vitb16": (_vit(12), {"last": 768, "cls": 768}, 768, 224, 14),
    "convnext_tiny": (
        CNN,
        {"stages.0": 96, "stages.1": 192, "stages.2": 384, "stages.3": 768, "last": 768},
        768,
        224,
        7,
    ),
    "resnet18": (CNN, {"stages.0": 64, "stages.3": 512, "pool": 512}, 512, 224, 7),
    "resnet34": (CNN, {"stages.0": 64, "stages.3": 512}, 512, 224, 7),
    "resnet50": (CNN, {"stages.0": 256, "stages.1": 512, "stages.2": 1024, "stages.3": 2048}, 2048, 224, 7),
    "resnet101": (CNN, {"stages.3": 2048}, 2048, 224, 7),
    "resnet152": (CNN, {"stages.3": 2048}, 2048, 224, 7),
    "vgg19": (
        [*VGG_RELUS, "last", "pool"],
        {"relu1_1": 64, "relu2_2": 128, "relu3_4": 256, "relu5_4": 512},
        512,
        224,
        14,
    ),
    "efficientnet_lite0": (
        CNN,
        {"stages.0": 24, "stages.1": 40, "stages.2": 112, "stages.3": 320, "last": 1280},
        1280,
        224,
        7,
    ),
    "vit_tiny_test": (_vit(4), {"last": 32}, 32, 64, 4),
    "resnet_tiny_test": (CNN, {"stages.0": 8, "stages.3": 64}, 64, 64, 2),
    "vgg_tiny_test": ([*VGG_RELUS, "last", "pool"], {"relu1_1": 8, "relu5_4": 32}, 32, 64, 4),
}


def test_table_names_are_registered() -> None:
    assert set(TABLE) <= set(available())
    assert set(available(include_test=False)) >= set(TABLE) - {n for n in TABLE if n.endswith("_test")}


@pytest.mark.parametrize("name", sorted(set(available()) - set(TABLE)))
def test_other_registered_names_build(name: str) -> None:
    """Entries registered elsewhere still build with every layer they advertise."""
    with torch.device("meta"):
        valid = create(name, ["last"], pretrained=False).valid_layers
        fx = create(name, valid, pretrained=False)
        assert list(fx(torch.zeros(1, 3, fx.input_size, fx.input_size))) == valid


@pytest.mark.parametrize("name", sorted(TABLE))
def test_layer_table(name: str) -> None:
    valid, channels, embed_dim, size, grid = TABLE[name]
    with torch.device("meta"):
        fx = create(name, valid, pretrained=False)
        out = fx(torch.zeros(2, 3, size, size))
    assert fx.valid_layers == valid
    assert list(out) == valid and fx.layers == valid
    assert fx.embed_dim == embed_dim and fx.input_size == size
    for layer, c in channels.items():
        assert fx.channels[layer] == c, layer
    for layer, feature in out.items():
        if layer in ("cls", "pool"):
            assert feature.shape == (2, embed_dim)
        else:
            assert feature.dim() == 4 and feature.shape[1] == fx.channels[layer]
    assert out["last"].shape[-2:] == (grid, grid)
    assert fx.family == {"vit": "vit", "vgg": "vgg"}.get(get_spec(name).kind, "cnn")


def test_feat_aliases_are_quarter_ends() -> None:
    assert quarter_ends(12) == [2, 5, 8, 11]
    assert quarter_ends(4) == [0, 1, 2, 3]
    assert quarter_ends(24) == [5, 11, 17, 23]


def test_normalisation_constants() -> None:
    with torch.device("meta"):
        clip = create("clip_vitb16", pretrained=False)
        dino = create("dino_vits16", pretrained=False)
        eff = create("efficientnet_lite0", pretrained=False)
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert dino.std == pytest.approx((0.229, 0.224, 0.225))
    assert eff.mean == eff.std == (0.5, 0.5, 0.5)


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        create("dino_vitz16", pretrained=False)
    text = str(err.value)
    assert "dino_vitz16" in text and "dino_vits16" in text and "resnet50" in text and "\n" not in text


def test_unknown_layer_lists_valid_layers() -> None:
    with pytest.raises(ConfigError) as err:
        create("resnet_tiny_test", ["stages.4"], pretrained=False)
    text = str(err.value)
    assert text.startswith("backbone.layers") and "stages.4" in text and "stages.3, last, pool" in text


def test_bad_feature_norm_and_input_size() -> None:
    with pytest.raises(ConfigError, match="feature_norm"):
        create("resnet_tiny_test", pretrained=False, feature_norm="batchnorm")
    with pytest.raises(ConfigError, match="patch size 16"):
        create("vit_tiny_test", pretrained=False, input_size=70)


def test_create_instantiates_from_a_hydra_config() -> None:
    backbone = {"_target_": "featlab.backbones.create", "name": "dino_vits16", "layers": ["last"],
                "pretrained": "${pretrained}", "checkpoint": None, "feature_norm": "none"}
    root = OmegaConf.create({"pretrained": False, "backbone": backbone})
    root.backbone.layers = ["feat1", "cls"]  # a ListConfig, as Hydra passes it
    with torch.device("meta"):
        fx = instantiate(root.backbone)
    assert fx.name == "dino_vits16" and fx.layers == ["feat1", "cls"]

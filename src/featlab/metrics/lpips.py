"""LPIPS (Zhang et al. 2018) beside PSNR/SSIM when its weights are on disk; never downloaded.

The perceptual-loss studies ask about perceived texture, which PSNR/SSIM do not measure. LPIPS
v0.1 is an ImageNet backbone (torchvision's AlexNet, VGG16 or SqueezeNet 1.1) under learned
linear heads. torchmetrics ships the heads (``lpips_models/<net>.pth``); the backbone is the file
torchvision would download. featlab reads it from ``backbone_weights`` (a local torchvision state
dict) or from torch.hub's checkpoints folder, where torchvision keeps its downloads. When neither
has it, :func:`build_lpips` logs one line saying LPIPS is skipped and why, and evaluation goes on
without it: an offline machine never stalls on a download and never reports a random-backbone
LPIPS. A ``backbone_weights`` that was given but cannot be used is a ConfigError naming the key.

Protocol (BasicSR's ``calculate_lpips``): RGB, 8-bit quantised like PSNR, ``crop_border`` pixels
cropped, [0, 1] mapped to [-1, 1]; one value per image, lower is better.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from featlab.checkpoints import load_checkpoint
from featlab.errors import ConfigError
from featlab.metrics.sr import PEAK, _prepare

log = logging.getLogger(__name__)

# LPIPS net name -> torchvision weights enum and attribute (its url's basename is the cached file name)
TORCHVISION_WEIGHTS = {"alex": ("AlexNet_Weights", "alexnet"), "vgg": ("VGG16_Weights", "vgg16"),
                       "squeeze": ("SqueezeNet1_1_Weights", "squeezenet1_1")}


def default_backbone_file(net: str) -> Path:
    """Where torchvision keeps the backbone's ImageNet weights once downloaded."""
    import torchvision.models as models

    url = getattr(models, TORCHVISION_WEIGHTS[net][0]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def heads_file(net: str) -> Path:
    """torchmetrics' copy of the LPIPS v0.1 linear heads."""
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"


class LPIPS(nn.Module):
    """Per-image LPIPS of ``(B, 3, H, W)`` images in [0, ``data_range``], ``(B,)``; frozen, eval mode."""

    def __init__(self, model: nn.Module, net: str) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.net = net

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, data_range: float = 1.0,
                quantize: bool = True) -> torch.Tensor:
        a, b = _prepare(sr, hr, crop_border, data_range, quantize, y_channel=False)
        self.model.to(sr.device)
        values = self.model((a / PEAK).float(), (b / PEAK).float(), normalize=True)
        return values.reshape(-1).float()


def build_lpips(net: str = "alex", backbone_weights: str | None = None, key: str = "task.eval_lpips") -> LPIPS | None:
    """The LPIPS scorer from local files only, or None (and one log line) when they are not on disk."""
    if net not in TORCHVISION_WEIGHTS:
        raise ConfigError(f"{key}.net", f"LPIPS nets are {', '.join(TORCHVISION_WEIGHTS)}, got '{net}'")
    try:
        heads = heads_file(net)
    except ImportError as err:  # torchmetrics without its LPIPS module: a skip, like missing weights
        log.info("LPIPS skipped: torchmetrics has no LPIPS module (%s)", err)
        return None
    if not heads.is_file():
        log.info("LPIPS skipped: torchmetrics has no LPIPS heads at %s", heads)
        return None
    if backbone_weights:
        backbone = Path(str(backbone_weights)).expanduser()
        if not backbone.is_file():
            raise ConfigError(f"{key}.backbone_weights", f"'{backbone}' does not exist")
    else:
        backbone = default_backbone_file(net)
        if not backbone.is_file():
            log.info("LPIPS skipped: the %s ImageNet weights are not on disk (%s) and featlab never downloads "
                     "during a run; set %s.backbone_weights=<torchvision state dict> or %s=null", net, backbone,
                     key, key)
            return None
    from torchmetrics.functional.image.lpips import _LPIPS

    model = _LPIPS(pretrained=False, net=net, pnet_rand=True)  # random, then filled from the files below
    state = load_checkpoint(backbone, key=f"{key}.backbone_weights")
    # torchmetrics splits torchvision's `features` into slices that keep each layer's index:
    # its `net.slice2.3.weight` is torchvision's `features.3.weight`
    mapped = {}
    for name in model.net.state_dict():
        _, index, rest = name.split(".", 2)
        source = f"features.{index}.{rest}"
        if not isinstance(state, dict) or source not in state:
            raise ConfigError(f"{key}.backbone_weights", f"'{backbone}' is not a torchvision "
                              f"{TORCHVISION_WEIGHTS[net][1]} state dict (no '{source}')")
        mapped[name] = state[source]
    model.net.load_state_dict(mapped)
    lins = load_checkpoint(heads, key=f"{key}.net")
    # the heads are registered twice (lin0.. and the lins list): the file names them once
    missing = [name for name in model.state_dict() if name.startswith("lin") and not name.startswith("lins.")
               and name not in lins]
    if missing:
        raise ConfigError(f"{key}.net", f"{heads} lacks {missing[0]}")
    model.load_state_dict(lins, strict=False)
    log.info("LPIPS (%s) from %s", net, backbone)
    return LPIPS(model, net)

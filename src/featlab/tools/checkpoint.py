"""Rebuild an SR network from a checkpoint, for the tools that start from one (``upscale``,
``export_onnx``); their command-line front door is :mod:`featlab.cli`.

A checkpoint is a featlab training checkpoint (the SISR task saves the net's resolved Hydra config
under ``hyper_parameters["net"]`` and its weights under the ``net.`` prefix of ``state_dict``;
loss backbones, EMA copies and optimiser state are ignored, so inference never needs the frozen
perceptual backbones) or a published weight file (``RealESRGAN_x4plus.pth``, SwinIR, EDSR, ...),
both read by :mod:`featlab.nets.published`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from featlab.checkpoints import load_checkpoint, save_checkpoint
from featlab.errors import ConfigError, require
from featlab.nets.own_checkpoint import NET_PREFIX, is_featlab_checkpoint
from featlab.nets.published import from_contents

log = logging.getLogger(__name__)

T = TypeVar("T")


def resolve_checkpoint(path: str | Path, key: str = "ckpt_path") -> Path:
    """``path`` as an existing file, or a ConfigError naming ``key`` (cheap, so tools can
    validate every argument before loading anything)."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigError(key, f"checkpoint '{resolved}' does not exist")
    return resolved


def load_net_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", key: str = "ckpt_path"
) -> tuple[nn.Module, dict[str, Any]]:
    """``(net.eval(), hparams)`` for a featlab checkpoint or a published weight file
    (:func:`featlab.nets.published.from_contents`: Real-ESRGAN, SwinIR, EDSR, NAFNet, SCUNet,
    spandrel's architectures). A published file's hparams hold only its ``scale``."""
    path = resolve_checkpoint(path, key)
    ckpt = load_checkpoint(path, key, map_location=map_location)
    net = from_contents(ckpt, f"'{path}'", key=key)
    hparams = dict(ckpt.get("hyper_parameters") or {}) if is_featlab_checkpoint(ckpt) else {}
    hparams.setdefault("scale", getattr(net, "scale", None))
    return net.to(map_location).eval(), hparams


def save_net_checkpoint(
    path: str | Path, net_config: Mapping[str, Any], net: nn.Module, **hparams: Any
) -> Path:
    """Write a minimal checkpoint in the SISR task's layout (``hyper_parameters['net']`` +
    ``net.``-prefixed weights): for nets trained outside featlab, and for tests of the tools."""
    require("_target_" in net_config, "net", "the network config needs a _target_")
    path = Path(path)
    state = {NET_PREFIX + k: v.detach().cpu() for k, v in net.state_dict().items()}
    scale = hparams.pop("scale", net_config.get("scale"))
    return save_checkpoint(
        {"state_dict": state, "hyper_parameters": {"net": dict(net_config), "scale": scale, **hparams}}, path
    )



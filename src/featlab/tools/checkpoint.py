"""Rebuild an SR network from a checkpoint, and the command-line front door shared by the tools
that start from one (``upscale``, ``export_onnx``).

A checkpoint is a featlab training checkpoint (the SISR task saves the net's resolved Hydra config
under ``hyper_parameters["net"]`` and its weights under the ``net.`` prefix of ``state_dict``;
loss backbones, EMA copies and optimiser state are ignored, so inference never needs the frozen
perceptual backbones) or a published weight file (``RealESRGAN_x4plus.pth``, SwinIR, EDSR, ...),
both read by :mod:`featlab.nets.published`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from featlab.checkpoints import load_checkpoint, save_checkpoint
from featlab.cli import key_help, wants_help
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


def parse_key_values(schema: type[T], argv: Sequence[str]) -> T:
    """Parse Hydra-style ``key=value`` arguments into the dataclass ``schema``.

    OmegaConf does the typing (ints, bools, null) and rejects unknown keys and missing
    mandatory (``???``) values; both come back as a ConfigError naming the key.
    """
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(
                None,
                f"arguments are key=value, got '{arg}'. Keys: {', '.join(f.name for f in fields(schema))}",
            )
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(argv)))
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(missing[0], "is required (pass it as key=value)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or None
        raise ConfigError(key, str(err).splitlines()[0]) from err


def run_cli(main: Callable[[T], object], schema: type[T], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``main``; a ConfigError becomes one line on stderr and exit code 2.

    ``--help`` prints the keys, their defaults and docs (the fields' trailing comments) instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        module = sys.modules[schema.__module__]
        print(key_help(schema, (module.__doc__ or "").split("\n\n")[0]))
        return 0
    try:
        main(parse_key_values(schema, args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

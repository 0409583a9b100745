"""Rebuild a trained SR network from a Lightning checkpoint, and the command-line front door
shared by the tools that start from one (``upscale``, ``export_onnx``).

The SISR task saves the net's resolved Hydra config under ``hyper_parameters["net"]`` and its
weights under the ``net.`` prefix of ``state_dict``; everything else (loss backbones, EMA copies,
optimiser state) is ignored, so inference never needs the frozen perceptual backbones.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from featlab.checkpoints import load_checkpoint, save_checkpoint
from featlab.cli import key_help, wants_help
from featlab.errors import ConfigError, require

log = logging.getLogger(__name__)

NET_PREFIX = "net."
COMPILED_PREFIX = "_orig_mod."  # added by torch.compile to every key of a compiled module

T = TypeVar("T")


def _load(path: Path, map_location: str | torch.device) -> Any:
    return load_checkpoint(path, "ckpt_path", map_location=map_location)


def _net_config(hparams: Mapping[str, Any], path: Path) -> dict[str, Any]:
    cfg = hparams.get("net")
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ConfigError(
            "ckpt_path",
            f"'{path}' has no network config (hyper_parameters['net'] with a _target_); "
            "was it written by the SISR task?",
        )
    cfg = dict(cfg)
    # An unresolved '${data.scale}' can only mean the task's own scale.
    if isinstance(cfg.get("scale"), str) and "scale" in hparams:
        cfg["scale"] = hparams["scale"]
    return cfg


def net_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries under ``net.`` with the prefix (and any torch.compile prefix) removed."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(NET_PREFIX):
            key = key[len(NET_PREFIX) :]
            out[key.removeprefix(COMPILED_PREFIX)] = value
    return out


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` as an existing file, or a ConfigError naming ``ckpt_path`` (cheap, so tools can
    validate every argument before loading anything)."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigError("ckpt_path", f"checkpoint '{resolved}' does not exist")
    return resolved


def load_net_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the checkpoint's network, load its weights, and return ``(net.eval(), hparams)``."""
    path = resolve_checkpoint(path)
    ckpt = _load(path, map_location)
    if not isinstance(ckpt, Mapping):
        raise ConfigError(
            "ckpt_path", f"'{path}' is not a Lightning checkpoint (got a {type(ckpt).__name__})"
        )
    hparams = dict(ckpt.get("hyper_parameters") or {})
    cfg = _net_config(hparams, path)
    try:
        net = instantiate(cfg)
    except ConfigError:
        raise
    except Exception as err:  # Hydra wraps import/constructor errors in its own types
        raise ConfigError(
            "ckpt_path", f"cannot build network {cfg['_target_']} from '{path}': {err}"
        ) from err
    weights = net_state_dict(ckpt.get("state_dict") or {})
    if not weights:
        raise ConfigError(
            "ckpt_path", f"'{path}' has no weights under the '{NET_PREFIX}' prefix of state_dict"
        )
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shape mismatches, one per line
        details = "; ".join(line.strip() for line in str(err).splitlines()[1:4])
        raise ConfigError(
            "ckpt_path", f"weights in '{path}' do not fit {cfg['_target_']}: {details}"
        ) from err
    hparams.setdefault("scale", getattr(net, "scale", cfg.get("scale")))
    return net.eval(), hparams


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

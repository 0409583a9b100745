"""featlab's own training checkpoints as networks: the SISR task stores the net's Hydra config
under ``hyper_parameters["net"]`` and its weights under the ``net.`` prefix of ``state_dict``.

Only the network is rebuilt (loss backbones, EMA copies and optimiser state are ignored), so
inference never pays for the frozen perceptual backbones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from featlab.errors import ConfigError

NET_PREFIX = "net."
COMPILED_PREFIX = "_orig_mod."  # added by torch.compile to every key of a compiled module


def is_featlab_checkpoint(obj: Any) -> bool:
    """A Lightning checkpoint written by a featlab task (``state_dict`` + ``hyper_parameters``)."""
    return (
        isinstance(obj, Mapping)
        and isinstance(obj.get("state_dict"), Mapping)
        and isinstance(obj.get("hyper_parameters"), Mapping)
    )


def net_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries under ``net.`` with the prefix (and any torch.compile prefix) removed."""
    return {
        key[len(NET_PREFIX) :].removeprefix(COMPILED_PREFIX): value
        for key, value in state_dict.items()
        if key.startswith(NET_PREFIX)
    }


def net_config(hparams: Mapping[str, Any], source: str, key: str = "ckpt_path") -> dict[str, Any]:
    """The stored net config, with an unresolved ``${data.scale}`` replaced by the task's scale."""
    cfg = hparams.get("net")
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ConfigError(
            key,
            f"{source} has no network config (hyper_parameters['net'] with a _target_); "
            "was it written by the SISR task?",
        )
    cfg = dict(cfg)
    if isinstance(cfg.get("scale"), str) and "scale" in hparams:
        cfg["scale"] = hparams["scale"]
    return cfg


def build(ckpt: Mapping[str, Any], source: str, key: str = "ckpt_path") -> nn.Module:
    """Instantiate the checkpoint's network and load its weights strictly; eval mode, CPU."""
    from featlab.nets.published import build_net, load_strict

    hparams = dict(ckpt.get("hyper_parameters") or {})
    cfg = net_config(hparams, source, key)
    try:
        net = build_net(cfg, load_weights=False)  # the checkpoint holds the (fine-tuned) weights
    except ConfigError:
        raise
    except Exception as err:  # Hydra wraps import/constructor errors in its own types
        first = (str(err).splitlines() or [""])[0]
        raise ConfigError(key, f"cannot build network {cfg['_target_']} from {source}: {first}") from None
    weights = net_state_dict(ckpt.get("state_dict") or {})
    if not weights:
        raise ConfigError(key, f"{source} has no weights under the '{NET_PREFIX}' prefix of state_dict")
    load_strict(net, weights, source, key)
    return net.float().eval()

"""`create`: a name and a list of layers -> a truncated, normalising, (by default) frozen extractor.

Order of work, chosen so that failures are cheap and nothing is built twice: resolve the weights
source (fail fast when offline), build the full model once, name its layers, truncate it to the
deepest requested layer, then load local weights strictly into what is left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from featlab.backbones.checkpoints import load_into, read_checkpoint
from featlab.backbones.extractor import FeatureExtractor
from featlab.backbones.featnorm import EXTRACTOR_NORMS
from featlab.backbones.hub import pretrained_file
from featlab.backbones.registry import BackboneSpec, get_spec, taps_for
from featlab.errors import ConfigError, unknown_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create(
    name: str,
    layers: Sequence[str] | str = ("last",),
    pretrained: bool = True,
    checkpoint: str | None = None,
    trainable: bool = False,
    feature_norm: str = "none",
    input_size: int | None = None,
    resize: bool = True,
    *,
    config_key: str = "backbone",
    name_key: str | None = None,
    **model_kwargs: Any,
) -> FeatureExtractor:
    """Build the named backbone as a :class:`FeatureExtractor` returning ``layers`` from one pass.

    ``checkpoint`` (a local file) wins over ``pretrained``; ``name="checkpoint"`` reads the
    architecture from a file written by :func:`save_backbone`. ``model_kwargs`` reach timm
    (e.g. ``drop_path_rate`` for trainable use). Errors are :class:`ConfigError` whose key starts
    with ``config_key`` (a perceptual loss passes ``loss.perceptual``); a bad name is reported
    under ``name_key`` (default ``<config_key>.name``).
    """
    name_key = name_key or f"{config_key}.name"
    layers = _layer_list(layers, config_key)
    state, source, stored_kwargs = None, "", {}
    if checkpoint:
        state, stored_name, stored_kwargs = read_checkpoint(checkpoint, f"{config_key}.checkpoint")
        source = f"checkpoint {checkpoint}"
        if stored_name and name not in ("checkpoint", stored_name):
            source += f" (saved from {stored_name})"
        if name == "checkpoint":
            if not stored_name:
                raise ConfigError(
                    name_key,
                    f"{checkpoint} does not record its backbone (it was not "
                    "written by save_backbone); set name to the architecture, e.g. dino_vits16",
                )
            name = stored_name
    elif name == "checkpoint":
        raise ConfigError(
            f"{config_key}.checkpoint", "name=checkpoint needs checkpoint=<file from save_backbone>"
        )
    spec = get_spec(name, name_key)
    if feature_norm not in EXTRACTOR_NORMS:
        raise unknown_name(f"{config_key}.feature_norm", feature_norm, EXTRACTOR_NORMS, "feature_norm")
    kwargs = {
        "num_classes": 0,
        **({"dynamic_img_size": True} if spec.kind == "vit" else {}),
        **spec.model_kwargs,
        **stored_kwargs,
        **model_kwargs,
    }

    model = None
    if state is None and pretrained:
        if spec.weights_file is not None:
            path = spec.weights_file(config_key)
            state, source = read_checkpoint(path, f"{config_key}.pretrained")[0], path
        elif spec.pretrained_tag is not None:
            path = pretrained_file(spec.timm_name, name, config_key)
            model = _build(spec, kwargs, config_key, pretrained_path=path)
        else:
            raise ConfigError(
                f"{config_key}.pretrained",
                f"{name} has no pretrained weights (test size); "
                "set pretrained=false for random init, or checkpoint=<local file>",
            )
    if model is None:
        model = _build(spec, {**kwargs, **spec.skeleton_kwargs}, config_key)

    full_keys = set(model.state_dict(keep_vars=True))  # keep_vars: no detach copies
    taps = taps_for(spec.kind, model)
    for layer in layers:
        if layer not in taps.valid_layers:
            raise ConfigError(
                f"{config_key}.layers",
                f"unknown layer '{layer}' for backbone {name}. Valid: {', '.join(taps.valid_layers)}",
            )
    taps.prune(model, layers)
    if state is not None:
        adapt = _pos_embed_adapter(model) if spec.kind == "vit" else None
        load_into(model, state, full_keys, source, f"{config_key}.checkpoint", spec.convert_state_dict, adapt)

    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(input_size or spec.input_size or (cfg.get("input_size") or (3, 224, 224))[-1])
    if taps.patch_size and size % taps.patch_size:
        raise ConfigError(
            f"{config_key}.input_size", f"{size} is not a multiple of {name}'s patch size {taps.patch_size}"
        )
    fx = FeatureExtractor(
        name=name,
        model=model,
        taps=taps,
        layers=layers,
        mean=spec.mean or cfg.get("mean") or IMAGENET_MEAN,
        std=spec.std or cfg.get("std") or IMAGENET_STD,
        input_size=size,
        resize=resize,
        trainable=trainable,
        feature_norm=feature_norm,
        config_key=config_key,
    )
    fx.build_kwargs = {**stored_kwargs, **model_kwargs}
    return fx


def _layer_list(layers: Sequence[str] | str, config_key: str) -> list[str]:
    """Accept a str, list or Hydra ListConfig; drop duplicates, keep order."""
    items = [layers] if isinstance(layers, str) else [str(layer) for layer in layers]
    if not items:
        raise ConfigError(f"{config_key}.layers", "request at least one layer, e.g. [last]")
    return list(dict.fromkeys(items))


def _build(
    spec: BackboneSpec, kwargs: dict[str, Any], config_key: str, pretrained_path: str | None = None
) -> nn.Module:
    """The full model, random init or timm's pretrained load from a local file (never the network)."""
    import timm

    try:
        if not isinstance(spec.arch, str):
            return spec.arch(**kwargs)
        if pretrained_path is None:
            return timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        return timm.create_model(
            spec.timm_name, pretrained=True, pretrained_cfg_overlay={"file": pretrained_path}, **kwargs
        )
    except TypeError as err:
        raise ConfigError(config_key, f"cannot build {spec.name} with {sorted(kwargs)}: {err}") from err


def _pos_embed_adapter(model: nn.Module):
    """Resample a checkpoint's ViT position embedding saved for another grid (e.g. DINOv2's 518 px)."""
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)

    def adapt(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if key != "pos_embed" or value.dim() != 3 or value.shape[-1] != target.shape[-1]:
            return value
        side = math.isqrt(value.shape[1] - prefix)
        if side * side != value.shape[1] - prefix:
            return value
        return resample_abs_pos_embed(
            value, new_size=list(model.patch_embed.grid_size), old_size=[side, side], num_prefix_tokens=prefix
        )

    return adapt

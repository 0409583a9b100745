"""`create`: a name and a list of layers -> a truncated, normalising, (by default) frozen extractor.

Five steps, in an order chosen so that failures are cheap and nothing is built twice:
:func:`weight_source` (fail fast when offline) -> :func:`build_full` (once) -> :func:`tap_layers`
(name, check, truncate) -> local weights loaded strictly into what is left ->
:func:`native_input_size` -> the :class:`FeatureExtractor` wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from featlab.backbones.checkpoints import load_into, read_checkpoint
from featlab.backbones.extractor import FeatureExtractor
from featlab.backbones.featnorm import EXTRACTOR_NORMS
from featlab.backbones.hub import pretrained_file
from featlab.backbones.registry import BackboneSpec, get_spec, taps_for
from featlab.backbones.taps import TapPlan
from featlab.errors import ConfigError, unknown_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class WeightSource:
    """Where a backbone's weights come from, decided before anything is built.

    ``state`` (a local file's tensors, loaded after truncation) or ``timm_file`` (timm's own
    pretrained loader reads it while building) or neither (random init). ``stored_kwargs`` are the
    build options a featlab backbone file recorded.
    """

    spec: BackboneSpec
    description: str = "random init"
    state: dict[str, torch.Tensor] | None = None
    timm_file: str | None = None
    stored_kwargs: dict[str, Any] = field(default_factory=dict)


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
    layers = _layer_list(layers, config_key)
    if feature_norm not in EXTRACTOR_NORMS:
        raise unknown_name(f"{config_key}.feature_norm", feature_norm, EXTRACTOR_NORMS, "feature_norm")
    source = weight_source(name, pretrained, checkpoint, config_key, name_key or f"{config_key}.name")
    build_kwargs = {**source.stored_kwargs, **model_kwargs}
    model = build_full(source, build_kwargs, config_key)
    full_keys = set(model.state_dict(keep_vars=True))  # keep_vars: no detach copies
    taps = tap_layers(source.spec, model, layers, config_key)
    if source.state is not None:
        adapt = _pos_embed_adapter(model) if source.spec.kind == "vit" else None
        load_into(model, source.state, full_keys, source.description, f"{config_key}.checkpoint",
                  source.spec.convert_state_dict, adapt)
    size = native_input_size(source.spec, model, taps, input_size, config_key)
    fx = FeatureExtractor(
        name=source.spec.name,
        model=model,
        taps=taps,
        layers=layers,
        mean=source.spec.mean or _pretrained_cfg(model).get("mean") or IMAGENET_MEAN,
        std=source.spec.std or _pretrained_cfg(model).get("std") or IMAGENET_STD,
        input_size=size,
        resize=resize,
        trainable=trainable,
        feature_norm=feature_norm,
        config_key=config_key,
    )
    fx.build_kwargs = build_kwargs
    return fx


def weight_source(name: str, pretrained: bool, checkpoint: str | None, config_key: str,
                  name_key: str) -> WeightSource:
    """Step 1: the spec and its weights. A local file is read now (and may name the architecture);
    pretrained weights are found (hub cache or a packaged file) or fail fast, before any build."""
    if checkpoint:
        state, stored_name, stored_kwargs = read_checkpoint(checkpoint, f"{config_key}.checkpoint")
        description = f"checkpoint {checkpoint}"
        if stored_name and name not in ("checkpoint", stored_name):
            description += f" (saved from {stored_name})"
        if name == "checkpoint":
            if not stored_name:
                raise ConfigError(
                    name_key,
                    f"{checkpoint} does not record its backbone (it was not "
                    "written by save_backbone); set name to the architecture, e.g. dino_vits16",
                )
            name = stored_name
        return WeightSource(get_spec(name, name_key), description, state, stored_kwargs=stored_kwargs)
    if name == "checkpoint":
        raise ConfigError(
            f"{config_key}.checkpoint", "name=checkpoint needs checkpoint=<file from save_backbone>"
        )
    spec = get_spec(name, name_key)
    if not pretrained:
        return WeightSource(spec)
    if spec.weights_file is not None:
        path = spec.weights_file(config_key)
        return WeightSource(spec, path, read_checkpoint(path, f"{config_key}.pretrained")[0])
    if spec.pretrained_tag is not None:
        path = pretrained_file(spec.timm_name, name, config_key)
        return WeightSource(spec, path, timm_file=path)
    raise ConfigError(
        f"{config_key}.pretrained",
        f"{name} has no pretrained weights{' (test size)' if spec.test_only else ''}; "
        "set pretrained=false for random init, or checkpoint=<local file>",
    )


def build_full(source: WeightSource, model_kwargs: dict[str, Any], config_key: str) -> nn.Module:
    """Step 2: the whole network, once (timm loads its pretrained file here; others load later)."""
    spec = source.spec
    kwargs = {
        "num_classes": 0,
        **({"dynamic_img_size": True} if spec.kind == "vit" else {}),
        **spec.model_kwargs,
        **model_kwargs,
    }
    if source.timm_file is None:
        kwargs.update(spec.skeleton_kwargs)  # shrink parts the taps always prune (no weights to fit)
    model = _build(spec, kwargs, config_key, pretrained_path=source.timm_file)
    return spec.finish(model) if spec.finish is not None else model


def tap_layers(spec: BackboneSpec, model: nn.Module, layers: Sequence[str], config_key: str) -> TapPlan:
    """Step 3: the family's layer names, a check of the requested ones, truncation after the deepest."""
    try:
        taps = taps_for(spec.kind, model)
    except ConfigError as err:
        if err.key is not None:
            raise
        raise ConfigError(f"{config_key}.name", str(err)) from None
    for layer in layers:
        if layer not in taps.valid_layers:
            raise ConfigError(
                f"{config_key}.layers",
                f"unknown layer '{layer}' for backbone {spec.name}. Valid: {', '.join(taps.valid_layers)}",
            )
    taps.prune(model, layers)
    return taps


def native_input_size(spec: BackboneSpec, model: nn.Module, taps: TapPlan, input_size: int | None,
                      config_key: str) -> int:
    """Step 4: the square side inputs are resized to: asked for, the spec's, or timm's pretrained config."""
    size = int(input_size or spec.input_size or (_pretrained_cfg(model).get("input_size") or (3, 224, 224))[-1])
    if taps.patch_size and size % taps.patch_size:
        raise ConfigError(
            f"{config_key}.input_size", f"{size} is not a multiple of {spec.name}'s patch size {taps.patch_size}"
        )
    return size


def _pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    return getattr(model, "pretrained_cfg", None) or {}


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

"""Any timm model as a backbone: ``name="timm/<model>[.<tag>]"`` (``timm/convnext_small``,
``timm/resnet50.a1_in1k``, ``timm/vit_base_patch14_reg4_dinov2``).

Nothing is renamed or re-walked here: the layers are timm's own feature API.

- timm ``VisionTransformer`` models get featlab's ViT taps (``block{i}``, ``feat1..4``, ``last``,
  ``cls``; see ``vit.py``), so a study can swap a preset ViT for any timm one and keep its layers.
- Every other model is tapped by :class:`FeatureInfoTaps`: the modules listed in
  ``model.feature_info`` under timm's names (``layer1``, ``stages.2``, ``blocks.4``...), ``feat1..N``
  for the same entries by position, ``last`` for the deepest one, and ``pool`` for the pre-logits
  embedding (``forward_head(pre_logits=True)``: the model's own pooling and head norm). One pass is
  ``forward_intermediates``; truncation is ``prune_intermediate_layers``.

Presets (``dino_vits16``, ``resnet50``...) stay as they are: fixed names with documented layer tables.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from featlab.errors import ConfigError

PREFIX = "timm/"
#: timm modules whose models are ``VisionTransformer``s (featlab's ViT taps apply).
VIT_MODULES = ("vision_transformer",)


def timm_spec_fields(name: str, key: str) -> dict[str, Any]:
    """``BackboneSpec`` fields for ``timm/<arch>[.<tag>]``, or one line naming ``key`` with close names.

    Without a tag, ``pretrained=True`` means timm's default weights for the architecture.
    """
    import timm
    from timm.models import get_deprecated_models, get_pretrained_cfg, split_model_name_tag

    model = name[len(PREFIX):]
    arch, tag = split_model_name_tag(model)
    if not timm.is_model(arch):
        renamed = get_deprecated_models().get(arch)
        hint = (f"timm renamed it to '{renamed}'" if renamed else
                "close timm names: " + (", ".join(difflib.get_close_matches(arch, timm.list_models(), n=5))
                                        or "none") + "; timm.list_models() lists all")
        raise ConfigError(key, f"unknown timm model '{arch}' ({hint})")
    tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*") if "." in t]
    if tag and tag not in tags:
        raise ConfigError(key, f"timm has no weights '{tag}' for {arch}. Valid tags: {', '.join(tags) or 'none'}")
    if not tag and tags:
        tag = get_pretrained_cfg(arch).tag or tags[0]
    kind = "vit" if timm.models.is_model_in_modules(arch, VIT_MODULES) else "timm"
    return {"kind": kind, "arch": arch, "pretrained_tag": tag or None,
            "description": f"timm {arch}{'.' + tag if tag else ''} ({'featlab ViT taps' if kind == 'vit' else 'feature_info taps'})"}


class FeatureInfoTaps:
    """Names, truncation and the single pass of any timm model with ``forward_intermediates``."""

    family = "cnn"
    embed_layer = "pool"

    def __init__(self, model: nn.Module) -> None:
        info = getattr(model, "feature_info", None)
        if not info or not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
            raise ConfigError(None, f"{type(model).__name__} does not implement timm's feature API "
                              "(feature_info, forward_intermediates); choose another timm model")
        modules = [str(entry["module"]) for entry in info]
        self.index = {module: i for i, module in enumerate(modules)}
        self.alias = {f"feat{i + 1}": module for i, module in enumerate(modules)}
        self.alias["last"] = modules[-1]
        self.valid_layers = (*modules, *(a for a in self.alias if a not in self.index), "pool")
        self.embed_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        self.patch_size = int(patch[0] if isinstance(patch, Sequence) else patch) if patch else None
        # token models check their input size strictly (Swin's windows): probe at the real size
        self.probe_at_input_size = self.patch_size is not None
        self.kept = len(modules) - 1
        self.has_head = True

    def _index(self, layer: str) -> int:
        return len(self.index) - 1 if layer == "pool" else self.index[self.alias.get(layer, layer)]

    def can_compute(self, layer: str) -> bool:
        return self.has_head if layer == "pool" else self._index(layer) <= self.kept

    def prune(self, model: nn.Module, layers: Sequence[str]) -> None:
        """timm's ``prune_intermediate_layers``: keep up to the deepest tap; the head only for ``pool``."""
        self.has_head = "pool" in layers
        if self.has_head:
            return  # pre-logits need the whole network and its head norm
        self.kept = max(self._index(layer) for layer in layers)
        model.prune_intermediate_layers([self.kept], prune_norm=True, prune_head=True)

    def run(self, model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """One ``forward_intermediates`` pass; ``pool`` from the final features through ``forward_head``."""
        taps = sorted({self._index(layer) for layer in layers if layer != "pool"})
        if "pool" in layers:
            final, grids = model.forward_intermediates(x, indices=taps or [self.kept], output_fmt="NCHW")
            found = {"pool": model.forward_head(final, pre_logits=True)}
        else:
            grids = model.forward_intermediates(x, indices=taps, output_fmt="NCHW", stop_early=True,
                                                intermediates_only=True)
            found = {}
        found.update(zip(taps, grids))
        return {layer: found["pool" if layer == "pool" else self._index(layer)] for layer in layers}

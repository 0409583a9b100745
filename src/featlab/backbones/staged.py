"""Layer taps for convnets (ResNet, ConvNeXt, EfficientNet-Lite, VGG) as a chain of named steps.

A plan is an ordered list of steps, each a few module paths run in sequence; a step with a name
is a tap. Truncation keeps the steps up to the deepest requested tap, so the pass stops there.

=================  ===================================================  ===========================
kind               taps (in depth order)                                ``last`` / ``pool``
=================  ===================================================  ===========================
resnet             ``stages.0..3`` = layer1..layer4 (stride 4..32)      last = stages.3 (post-ReLU);
                                                                        pool = mean of last
convnext           ``stages.0..3`` = timm stages 0..3                   last = head LayerNorm on
                                                                        stages.3 per position; pool
                                                                        = LayerNorm(mean(stages.3))
                                                                        (timm's pre-logits)
effnet_lite        ``stages.0`` = blocks.1 (24ch, /4), ``stages.1`` =   last = conv_head+BN+ReLU6
                   blocks.2 (40ch, /8), ``stages.2`` = blocks.4         (1280ch, /32); pool = mean
                   (112ch, /16), ``stages.3`` = blocks.6 (320ch, /32)   of last
vgg                ``relu1_1 .. relu5_4`` (the 16 ReLUs of VGG19)       last = relu5_4; pool = mean
                                                                        of relu5_4
=================  ===================================================  ===========================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from featlab.backbones.prune import prune_to


@dataclass(frozen=True)
class Step:
    """Module paths run in order; ``name`` makes the step's output a tap."""

    name: str | None
    modules: tuple[str, ...]


class StagedTaps:
    """Names, truncation and the single forward pass for a chain-of-steps convnet."""

    embed_layer = "pool"

    def __init__(
        self,
        family: str,
        steps: Sequence[Step],
        aliases: dict[str, str],
        pool_source: str,
        pool_norm: str | None,
        embed_dim: int,
    ) -> None:
        self.family = family
        self.steps = tuple(steps)
        self.aliases = dict(aliases)
        self.pool_source = pool_source
        self.pool_norm = pool_norm
        self.embed_dim = embed_dim
        self.step_index = {s.name: i for i, s in enumerate(self.steps) if s.name is not None}
        self.valid_layers = (*self.step_index, *(a for a in self.aliases if a not in self.step_index), "pool")
        self.kept_steps = len(self.steps)
        self.has_pool_norm = pool_norm is not None
        self.patch_size = None
        self._channels: dict[str, int] = {}

    def _step_of(self, layer: str) -> int:
        if layer == "pool":
            return self._step_of(self.pool_source)
        return self.step_index[self.aliases.get(layer, layer)]

    def can_compute(self, layer: str) -> bool:
        if layer == "pool" and self.pool_norm is not None and not self.has_pool_norm:
            return False
        return self._step_of(layer) < self.kept_steps

    def prune(self, model: nn.Module, layers: Sequence[str]) -> None:
        """Keep the steps up to the deepest requested layer (and the pool's norm if pooled)."""
        self.kept_steps = max(self._step_of(layer) for layer in layers) + 1
        keep = {path for step in self.steps[: self.kept_steps] for path in step.modules}
        self.has_pool_norm = self.pool_norm is not None and ("pool" in layers or self.pool_norm in keep)
        if self.has_pool_norm:
            keep.add(self.pool_norm)
        prune_to(model, keep)

    def run(self, model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """One pass through the kept steps, collecting every requested layer on the way."""
        wanted = {self.pool_source if layer == "pool" else self.aliases.get(layer, layer) for layer in layers}
        depth = max(self._step_of(layer) for layer in layers) + 1
        found: dict[str, torch.Tensor] = {}
        for step in self.steps[:depth]:
            for path in step.modules:
                x = model.get_submodule(path)(x)
            if step.name in wanted:
                found[step.name] = x
        out = {}
        for layer in layers:
            if layer == "pool":
                pooled = found[self.pool_source].mean(dim=(2, 3), keepdim=True)
                if self.pool_norm is not None:
                    pooled = model.get_submodule(self.pool_norm)(pooled)
                out[layer] = pooled.flatten(1)
            else:
                out[layer] = found[self.aliases.get(layer, layer)]
        return out


def resnet_taps(model: nn.Module) -> StagedTaps:
    steps = [Step(None, ("conv1", "bn1", "act1", "maxpool"))]
    steps += [Step(f"stages.{i}", (f"layer{i + 1}",)) for i in range(4)]
    return StagedTaps("cnn", steps, {"last": "stages.3"}, "stages.3", None, int(model.num_features))


def convnext_taps(model: nn.Module) -> StagedTaps:
    steps = [Step(None, ("stem",))]
    steps += [Step(f"stages.{i}", (f"stages.{i}",)) for i in range(len(model.stages))]
    steps.append(Step("last", ("norm_pre", "head.norm")))
    return StagedTaps(
        "cnn", steps, {}, f"stages.{len(model.stages) - 1}", "head.norm", int(model.num_features)
    )


def effnet_lite_taps(model: nn.Module) -> StagedTaps:
    steps = [
        Step(None, ("conv_stem", "bn1", "blocks.0")),
        Step("stages.0", ("blocks.1",)),
        Step("stages.1", ("blocks.2",)),
        Step("stages.2", ("blocks.3", "blocks.4")),
        Step("stages.3", ("blocks.5", "blocks.6")),
        Step("last", ("conv_head", "bn2")),
    ]
    return StagedTaps("cnn", steps, {}, "last", None, int(model.num_features))


def vgg_taps(model: nn.Module) -> StagedTaps:
    """One step per ReLU of ``model.features``: ``relu{block}_{conv}``, blocks split by max-pools."""
    steps, start, block, conv = [], 0, 1, 0
    for index, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(layer, nn.ReLU):
            conv += 1
            steps.append(Step(f"relu{block}_{conv}", tuple(f"features.{i}" for i in range(start, index + 1))))
            start = index + 1
    deepest = steps[-1].name
    return StagedTaps("vgg", steps, {"last": deepest}, deepest, None, int(model.num_features))


TAPS = {"resnet": resnet_taps, "convnext": convnext_taps, "effnet_lite": effnet_lite_taps, "vgg": vgg_taps}

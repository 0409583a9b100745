"""Architectures featlab does not implement, read through the optional ``spandrel`` package.

spandrel (MIT, ``pip install featlab[spandrel]``) recognises 40+ published SR / restoration
architectures from a bare state dict. featlab uses it only for inference (``upscale``, ``eval``,
``export_onnx``): its own networks stay the ones it trains. :class:`SpandrelNet` gives spandrel's
module featlab's SR-net interface (``scale``, ``in_channels``, ``size_multiple``; RGB in [0, 1] of
any size in, output not clamped), padding to the architecture's size requirements inside forward
with plain tensor ops so the module exports to ONNX like featlab's nets.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.util import find_spec

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featlab.errors import ConfigError


def available() -> bool:
    """Whether the optional spandrel package is importable."""
    return find_spec("spandrel") is not None


def architectures() -> list[str]:
    """spandrel's architecture ids (empty without spandrel)."""
    if not available():
        return []
    from spandrel import MAIN_REGISTRY

    return [a.architecture.id for a in MAIN_REGISTRY.architectures()]


class SpandrelNet(nn.Module):
    """A spandrel image model with featlab's SR-net interface (no clamping, no inference_mode)."""

    def __init__(self, descriptor) -> None:
        super().__init__()
        self.model = descriptor.model
        self.architecture = str(descriptor.architecture.id)
        self.scale = int(descriptor.scale)
        self.in_channels = int(descriptor.input_channels)
        self.out_channels = int(descriptor.output_channels)
        req = descriptor.size_requirements
        self.size_multiple = max(1, int(req.multiple_of))
        self.min_size = int(req.minimum)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = self.size_multiple
        pad_h = (m - h % m) % m + max(0, self.min_size - h)
        pad_w = (m - w % m) % m + max(0, self.min_size - w)
        if m > 1 or self.min_size > 1:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.model(x)
        return out[..., : h * self.scale, : w * self.scale]


def from_state_dict(state: Mapping[str, Tensor], source: str, key: str = "weights") -> SpandrelNet | None:
    """The spandrel model for ``state`` in eval mode, or None if spandrel does not recognise it."""
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, UnsupportedModelError

    try:
        descriptor = MAIN_REGISTRY.load(dict(state))
    except UnsupportedModelError:
        return None
    except Exception as err:  # a recognised layout whose tensors do not fit it
        first = (str(err).splitlines() or [""])[0][:160]
        raise ConfigError(key, f"spandrel could not read {source} ({type(err).__name__}: {first})") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ConfigError(key, f"{source} is a {descriptor.architecture.id} model, not an image-to-image network")
    net = SpandrelNet(descriptor)
    return net.float().eval().requires_grad_(False).to(torch.device("cpu"))

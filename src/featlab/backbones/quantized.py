"""Dynamically int8-quantised weight files: read them, dequantise them, or run them as published.

``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`` swaps every
``nn.Linear`` for a dynamically quantised one, whose state dict holds, in place of
``<layer>.weight``/``<layer>.bias``: ``<layer>._packed_params._packed_params`` = (int8 weight
carrying its scale and zero point, float bias), ``<layer>._packed_params.dtype`` and an output
``<layer>.scale``/``<layer>.zero_point`` that dynamic quantisation never uses. The published
EdgeFace ``*_q.pt`` files are exactly such a ``state_dict()``. ``torch.load(weights_only=True)``
reads them (quantised tensors, dtypes and tuples are all on its allow-list), so nothing here ever
needs the unsafe unpickler.

Two uses, because the two needs differ:

- :func:`dequantize_dynamic`: float weights ``scale * (q - zero_point)`` and the float biases,
  under the float model's key names. Any float model of the architecture loads them and is
  differentiable (a loss needs that); its output differs slightly from the int8 model's, because
  the int8 model also quantises each linear layer's *input* on the fly.
- :func:`quantize_like_published` + ``load_state_dict``: the very model that was published (int8
  linears, fbgemm/qnnpack kernels, CPU only, no autograd). :class:`CPUOnly` keeps it on the CPU when
  the module around it moves to an accelerator.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

PACKED = "._packed_params._packed_params"
_LAYER_EXTRAS = ("._packed_params.dtype", ".scale", ".zero_point")  # per quantised layer, not weights


def quantized_layers(state: Mapping[str, Any]) -> list[str]:
    """Prefixes of the dynamically quantised linear layers in ``state`` (empty: a float file)."""
    return [key[: -len(PACKED)] for key in state if isinstance(key, str) and key.endswith(PACKED)]


def is_dynamic_quantized(state: Mapping[str, Any]) -> bool:
    return bool(quantized_layers(state))


def dequantize_dynamic(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with every packed linear turned into float ``weight``/``bias`` (other entries kept).

    Also dequantises any other quantised tensor, so the result holds float tensors only.
    """
    layers = set(quantized_layers(state))
    extras = {layer + suffix for layer in layers for suffix in (PACKED, *_LAYER_EXTRAS)}
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in extras:
            continue
        out[key] = value.dequantize() if torch.is_tensor(value) and value.is_quantized else value
    for layer in layers:
        weight, bias = _unpack(state[layer + PACKED])
        out[layer + ".weight"] = weight.dequantize()
        if bias is not None:
            out[layer + ".bias"] = bias.detach().clone()  # saved as a Parameter; a plain tensor here
    return out


def _unpack(packed: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(int8 weight, bias)`` as ``LinearPackedParams.__getstate__`` saves them (a tuple; older
    torch versions save the packed-params object itself, which ``linear_unpack`` opens)."""
    if isinstance(packed, tuple | list) and packed and torch.is_tensor(packed[0]):
        return packed[0], packed[1] if len(packed) > 1 else None
    return torch.ops.quantized.linear_unpack(packed)


def with_packed_versions(state: Mapping[str, Any]) -> OrderedDict:
    """``state`` (a copy) whose ``_metadata`` marks every packed layer as the packed layout.

    Quantised linears read their module version from the state dict's ``_metadata``: it says how to
    read their entries and how to run (version 4 quantises inputs with ``reduce_range``). Without it
    (a dict re-saved as plain ``{k: v}``) they would expect the pre-2020 ``weight``/``bias`` layout and
    fail; the keys say it is the packed layout, so the versions this torch writes are assumed.
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.nn.quantized.modules.linear import LinearPackedParams

    out = OrderedDict(state)
    metadata = OrderedDict(getattr(state, "_metadata", None) or {})
    for layer in quantized_layers(state):
        metadata.setdefault(layer, {"version": DynamicLinear._version})
        metadata.setdefault(layer + "._packed_params", {"version": LinearPackedParams._version})
    out._metadata = metadata  # type: ignore[attr-defined]
    return out


def quantize_like_published(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with every ``nn.Linear`` dynamically int8-quantised, the recipe of the
    published files, so that their state dicts load strictly into it."""
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; the recipe is fixed
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


class CPUOnly(nn.Module):
    """A module that must run on the CPU (int8 kernels, TorchScript quantised ops) inside one that may
    move: ``.to(device)`` leaves it where it is, inputs go to the CPU as float32 and outputs come back
    to the input's device and dtype. No autograd: use it for measuring, not for a loss."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def _apply(self, fn, recurse: bool = True):
        return self  # packed int8 weights must not move to an accelerator, nor change dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x.detach().float().cpu()).to(device=x.device, dtype=x.dtype)

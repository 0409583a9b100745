"""CPU/GPU inference fast paths shared by ``upscale`` and ``deploy-bench``: what one measures is
what the other ships.

bf16 autocast runs convolutions and matmuls in bf16, where oneDNN uses AMX or AVX-512-BF16 kernels
on CPUs that have them (Sapphire Rapids and newer, Zen 4+); reductions such as softmax and norms
stay fp32. ``torch.compile`` with frozen weights pre-packs them once. channels_last is the layout
those convolution kernels run fastest in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


def compile_for_inference(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` with inductor's ``freezing``: weights become constants, so convolutions and
    linears are pre-packed into oneDNN's blocked layouts once and folded with their neighbours;
    without it inductor re-lays out every weight on every call (the CPU inference recipe of the
    PyTorch docs). Only for inference: frozen weights no longer follow the module's parameters."""
    return torch.compile(net, options={"freezing": True})


def bf16_forward(net: nn.Module | Callable, x: torch.Tensor) -> torch.Tensor:
    """One CPU forward under bf16 autocast: convolutions and matmuls in bf16 (oneDNN picks AMX or
    AVX-512-BF16 kernels where the CPU has them), reductions such as softmax and norms in fp32."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return net(x)


class FastForward(nn.Module):
    """``net`` behind the deployment choices ``featlab deploy-bench`` measures: channels_last input,
    optional bf16 autocast, optionally ``torch.compile``-d with frozen weights. A module, so
    :func:`tiled_forward` still finds the net's device, scale and size multiple."""

    def __init__(self, net: nn.Module, device: torch.device, precision: str, compile: bool) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)
        self.scale, self.size_multiple = getattr(net, "scale", None), getattr(net, "size_multiple", 1)
        self.device_type, self.bf16 = device.type, precision == "bf16"
        # not a submodule: the compiled wrapper shares ``net``'s parameters
        self.__dict__["run"] = compile_for_inference(self.net) if compile else self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.run(x.contiguous(memory_format=torch.channels_last)).float()


def fast_forward(net: nn.Module, device: torch.device, precision: str, compile: bool) -> nn.Module:
    """``net`` itself for plain fp32, else wrapped in :class:`FastForward`."""
    return FastForward(net, device, precision, compile) if (precision != "fp32" or compile) else net

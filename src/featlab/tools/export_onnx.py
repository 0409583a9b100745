"""Export a trained SR checkpoint to ONNX with dynamic batch, height and width.

    python -m featlab.tools.export_onnx ckpt_path=run/last.ckpt [output=model.onnx opset=18 exporter=dynamo]

The default exporter is torch.export-based (``dynamo=True``, the recommended path in torch 2.x;
it works offline, with ``Dim.AUTO`` dynamic batch/height/width). Its native opset is 18, hence
the default; for lower opsets it runs ONNX's version converter, which has no adapter for ``Pad``
below 18, so nets that pad internally (SwinIR, RRDBNet x1/x2, NAFNet, SCUNet) stay at opset 18
(the tool prints the opset actually written). The legacy TorchScript exporter
(``exporter=legacy``) also exports every net here with dynamic axes, at any opset >= 17, and
is much faster, but torch has deprecated it. After export the model is run with
onnxruntime on an input whose batch and size differ from the traced one, and the maximum
absolute difference to PyTorch is printed; exceeding ``atol`` is an error.

Tracing sizes matter for networks that pad internally (SwinIR windows, NAFNet/SCUNet levels):
the example input is batch 2 and ``2 * multiple + 3`` by ``2 * multiple + 5`` pixels, so no
internal dimension is 1 (torch.export would specialise it) and the padding path is traced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featlab.cli import run_cli
from featlab.errors import require
from featlab.files import atomic_path
from featlab.tools.checkpoint import load_net_from_checkpoint

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "legacy")
#: Operators every minimal runtime we know of handles (mobile/embedded ONNX runtimes, TensorRT,
#: converters to TFLite/Core ML); ``portable=true`` rewrites what it can into these and names the rest.
CONSERVATIVE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Erf", "Tanh", "Sigmoid", "Relu", "LeakyRelu",
    "PRelu", "Clip", "Min", "Max", "Conv", "ConvTranspose", "MatMul", "Gemm", "Softmax", "ReduceMean",
    "ReduceSum", "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Squeeze", "Unsqueeze", "Flatten",
    "Shape", "Constant", "ConstantOfShape", "Identity", "Cast", "Expand", "Pad", "Resize", "DepthToSpace",
    "SpaceToDepth", "AveragePool", "MaxPool", "GlobalAveragePool", "Equal", "Where", "Floor", "Ceil", "Mod",
})


@dataclass
class ExportArgs:
    """Command-line keys; ``???`` marks the required ones."""

    ckpt_path: str = "???"       # SR training checkpoint to export
    output: str = "model.onnx"   # ONNX file to write
    opset: int = 18              # ONNX opset to target
    exporter: str = "dynamo"     # torch.onnx exporter: dynamo | legacy
    portable: bool = False       # rewrite LayerNorm into arithmetic and list ops outside the conservative set
    verify: bool = True          # run onnxruntime at an untraced size and compare with PyTorch
    atol: float = 1e-3           # largest accepted |ONNX - PyTorch| when verifying


def example_input(net: nn.Module, batch: int = 2, extra: int = 0) -> torch.Tensor:
    """A random input sized to exercise the net's internal padding without size-1 dimensions."""
    base = max(8, int(getattr(net, "size_multiple", 1)))
    h, w = 2 * base + 3 + extra, 2 * base + 5 + extra
    return torch.rand(batch, int(getattr(net, "in_channels", 3)), h, w)


class ArithmeticLayerNorm(nn.Module):
    """LayerNorm over the last (or, for NCHW maps, the channel) dimension written as mean/variance
    arithmetic, for runtimes without ``LayerNormalization`` (an opset-17 operator)."""

    def __init__(self, norm: nn.Module, channels_first: bool) -> None:
        super().__init__()
        self.weight, self.bias, self.eps, self.channels_first = norm.weight, norm.bias, norm.eps, channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
        centred = x - x.mean(dim=-1, keepdim=True)
        y = centred / torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + self.eps)
        y = y * self.weight + self.bias
        return y.permute(0, 3, 1, 2) if self.channels_first else y


def portable_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose LayerNorms export as arithmetic; the original is untouched."""
    import copy

    from featlab.nets.sr.blocks import LayerNorm2d

    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LayerNorm) and len(child.normalized_shape) == 1 and child.elementwise_affine:
                setattr(parent, name, ArithmeticLayerNorm(child, channels_first=False))
            elif isinstance(child, LayerNorm2d):
                setattr(parent, name, ArithmeticLayerNorm(child, channels_first=True))
    return net


def onnx_inventory(path: str | Path) -> list[str]:
    """Every operator type in an ONNX file, its local functions (dynamo exports) included."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graphs = [model.graph.node, *(f.node for f in model.functions)]
    return sorted({node.op_type for nodes in graphs for node in nodes})


def nonportable_ops(path: str | Path) -> list[str]:
    """Operators of the file outside :data:`CONSERVATIVE_OPS`."""
    return [op for op in onnx_inventory(path) if op not in CONSERVATIVE_OPS]


def export_onnx(net: nn.Module, path: str | Path, opset: int = 18, exporter: str = "dynamo",
                portable: bool = False) -> Path:
    """Write ``net`` (eval mode, fp32, CPU) to ``path`` with dynamic batch/height/width axes;
    ``portable`` exports :func:`portable_copy` instead."""
    require(exporter in EXPORTERS, "exporter", f"must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    path = Path(path).expanduser()
    net = net.float().cpu().eval()
    if portable:
        net = portable_copy(net)
    x = example_input(net)
    names = {"input_names": ["lr"], "output_names": ["sr"], "opset_version": opset}
    with torch.no_grad(), atomic_path(path) as tmp:
        if exporter == "dynamo":
            auto = torch.export.Dim.AUTO
            program = torch.onnx.export(
                net, (x,), dynamo=True, dynamic_shapes=({0: auto, 2: auto, 3: auto},), **names
            )
            program.save(tmp, external_data=False)
        else:
            axes = {
                "lr": {0: "batch", 2: "height", 3: "width"},
                "sr": {0: "batch", 2: "out_height", 3: "out_width"},
            }
            torch.onnx.export(net, (x,), str(tmp), dynamo=False, dynamic_axes=axes, **names)
    return path


def written_opset(path: str | Path) -> int:
    """The default-domain opset stored in an ONNX file (may differ from the one requested)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def onnx_max_abs_diff(net: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Run the ONNX file with onnxruntime (CPU) and PyTorch on ``x``; max |difference|."""
    import onnxruntime as ort  # optional dependency (extra 'export'); only needed here

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = net.float().cpu().eval()(x).numpy()
    require(
        onnx_out.shape == ref.shape, "output", f"ONNX output shape {onnx_out.shape} != PyTorch {ref.shape}"
    )
    return float(np.abs(onnx_out - ref).max())


def run(args: ExportArgs) -> Path:
    """Load the checkpoint, export, verify at an untraced batch/size, print the difference."""
    net, _ = load_net_from_checkpoint(args.ckpt_path)
    path = export_onnx(net, args.output, args.opset, args.exporter, args.portable)
    opset = written_opset(path)
    print(f"wrote {path} (opset {opset}, {args.exporter} exporter, dynamic batch/height/width)")
    if args.portable:
        remaining = nonportable_ops(path)
        print("portable: every operator is in the conservative set" if not remaining else
              f"portable: operators outside the conservative set remain: {', '.join(remaining)}"
              + (" (try exporter=legacy)" if args.exporter == "dynamo" else ""))
    if opset != args.opset:
        print(f"note: opset {args.opset} was requested; the ONNX version converter could not reach it")
    if args.verify:
        x = example_input(net, batch=3, extra=7)
        diff = onnx_max_abs_diff(net, path, x)
        print(f"onnxruntime vs PyTorch on input {tuple(x.shape)}: max abs diff {diff:.3e}")
        require(diff <= args.atol, "atol", f"ONNX output differs from PyTorch by {diff:.3e} > {args.atol}")
    return path


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, ExportArgs, argv)


if __name__ == "__main__":
    raise SystemExit(main())

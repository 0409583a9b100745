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


@dataclass
class ExportArgs:
    """Command-line keys; ``???`` marks the required ones."""

    ckpt_path: str = "???"       # SR training checkpoint to export
    output: str = "model.onnx"   # ONNX file to write
    opset: int = 18              # ONNX opset to target
    exporter: str = "dynamo"     # torch.onnx exporter: dynamo | torchscript
    verify: bool = True          # run onnxruntime at an untraced size and compare with PyTorch
    atol: float = 1e-3           # largest accepted |ONNX - PyTorch| when verifying


def example_input(net: nn.Module, batch: int = 2, extra: int = 0) -> torch.Tensor:
    """A random input sized to exercise the net's internal padding without size-1 dimensions."""
    base = max(8, int(getattr(net, "size_multiple", 1)))
    h, w = 2 * base + 3 + extra, 2 * base + 5 + extra
    return torch.rand(batch, int(getattr(net, "in_channels", 3)), h, w)


def export_onnx(net: nn.Module, path: str | Path, opset: int = 18, exporter: str = "dynamo") -> Path:
    """Write ``net`` (eval mode, fp32, CPU) to ``path`` with dynamic batch/height/width axes."""
    require(exporter in EXPORTERS, "exporter", f"must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    path = Path(path).expanduser()
    net = net.float().cpu().eval()
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
    path = export_onnx(net, args.output, args.opset, args.exporter)
    opset = written_opset(path)
    print(f"wrote {path} (opset {opset}, {args.exporter} exporter, dynamic batch/height/width)")
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

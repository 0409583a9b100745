"""Which SR net to ship: CPU inference cost of each network at its published size, path by path.

    python -m featlab.tools.deploy_bench                                   # every net, every path
    python -m featlab.tools.deploy_bench nets=rrdb_x4,nafnet_sidd paths=eager,onnxruntime
    python -m featlab.tools.deploy_bench nets=rrdb_x4 weights=RealESRGAN_x4plus.pth

For each net (random weights at the published size, or ``weights=`` a published file for one net) and
each tile it measures, in ONE process so the ratios share the machine's state, the median of
``repeats`` timed forwards after ``warmup`` of:

- ``reference``: the baseline of every ratio, eager fp32 PyTorch computing each op as the official
  code does (featlab's nets with window attention switched to its reference formulation; measured
  0.93-1.15x the official implementations' time on the same tile);
- ``eager`` (featlab's forward: fused window attention), ``channels_last``, ``torch.compile``, ONNX
  Runtime on the exported file: fp32 paths, judged by their max abs difference to the reference;
- ``bf16`` (CPU autocast + channels_last: oneDNN's AMX/AVX-512-BF16 kernels where the CPU has them)
  and ``int8`` (dynamic quantisation of the Linear layers): reduced-precision paths, judged by the
  PSNR they cost on the embedded photos (:func:`reduced_precision_ok`).

Each export's ONNX operator inventory is listed with the operators outside
``export_onnx.CONSERVATIVE_OPS``. Writes ``output`` (JSON) and a Markdown table beside it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from featlab.cli import run_cli
from featlab.errors import require, unknown_name
from featlab.files import write_text
from featlab.tools.export_onnx import CONSERVATIVE_OPS
from featlab.tools.fast_inference import bf16_forward, compile_for_inference

#: id -> published-size label (featlab.nets.published.PUBLISHED_SIZES) or featlab's own small net.
NETS = {
    "espcn_x4": ("ESPCN x4 (featlab default)", "espcn", {"scale": 4}),
    "edsr_x4": ("EDSR baseline x4", None, None),
    "rrdb_x4": ("Real-ESRGAN x4plus", None, None),
    "swinir_light_x4": ("SwinIR-light x4", None, None),
    "swinir_classical_x4": ("SwinIR classical x4", None, None),
    "nafnet_sidd": ("NAFNet SIDD-w32", None, None),
    "scunet": ("SCUNet", None, None),
}
PATHS = ("eager", "channels_last", "compile", "onnxruntime", "bf16", "bf16_compile", "int8")
REDUCED_PRECISION = ("bf16", "bf16_compile", "int8")

#: Accuracy goal of the issue: fp32 paths within 1e-4 of the reference; reduced precision costing at most
#: 0.1 dB PSNR on the embedded photos.
FP32_ATOL, MAX_PSNR_LOSS_DB = 1e-4, 0.1
#: With random weights the PSNR against the HR photo means nothing, so a reduced-precision path is judged
#: by its fidelity PSNR(low precision, fp32) instead: if its error is uncorrelated with the fp32 model's
#: error, MSE adds and the loss is 10 log10(1 + 10^((P_model - P_fidelity) / 10)) dB, which is <= 0.1 dB
#: for every model scoring up to MODEL_PSNR_CEILING_DB on the photo when P_fidelity >= ceiling + 16.3 dB.
MODEL_PSNR_CEILING_DB = 35.0
MIN_FIDELITY_DB = MODEL_PSNR_CEILING_DB - 10 * math.log10(10 ** (MAX_PSNR_LOSS_DB / 10) - 1)


@dataclass
class DeployBenchArgs:
    """Command-line keys."""

    nets: str = "all"                 # comma list of espcn_x4 edsr_x4 rrdb_x4 swinir_light_x4 swinir_classical_x4 nafnet_sidd scunet, or all
    paths: str = "all"                # comma list of eager channels_last compile onnxruntime bf16 bf16_compile int8, or all (the reference always runs)
    lr_tiles: str = "64,256"          # LR tile sides for upscaling nets (comma list)
    tile_1x: int = 256                # tile side for 1x restoration nets
    weights: str = ""                 # a published weight file (then nets must name one net)
    warmup: int = 2                   # untimed forwards before timing
    repeats: int = 5                  # timed forwards; the median is reported
    threads: int = 0                  # torch/ONNX Runtime intra-op threads (0: torch's default)
    exporter: str = "legacy"          # ONNX exporter for the onnxruntime path: legacy (fast) | dynamo
    portable: bool = False            # export with export_onnx's portable rewrite (LayerNorm as arithmetic)
    output: str = "deploy_bench.json"  # results (JSON); a Markdown table is written beside it (.md)


@dataclass
class PathResult:
    ms: float | None = None
    speedup: float | None = None      # reference ms / this path's ms
    max_abs_diff: float | None = None  # against the reference output
    psnr_loss_db: float | None = None  # reduced precision: PSNR(reference, HR) - PSNR(this path, HR)
    fidelity_db: float | None = None   # reduced precision: PSNR(this path, reference), outputs clamped to [0, 1]
    note: str = ""


@dataclass
class NetResult:
    net: str
    label: str
    params: int
    tile: int
    real_weights: bool = False        # weights= a trained file: the PSNR loss against HR is meaningful
    paths: dict[str, PathResult] = field(default_factory=dict)
    onnx_ops: list[str] = field(default_factory=list)
    onnx_nonportable_ops: list[str] = field(default_factory=list)


def _choices(value: str, valid: tuple[str, ...] | dict, key: str) -> list[str]:
    items = list(valid) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    for item in items:
        if item not in valid:
            raise unknown_name(key, item, valid, key.rstrip("s"))
    return items


def build(net_id: str, weights: str = "") -> tuple[nn.Module, str]:
    """The net in eval mode, fp32, CPU: a published file's, or random weights at the published size."""
    if weights:
        from featlab.nets import load

        return load(weights), Path(weights).name
    label, own_name, own_kwargs = NETS[net_id]
    if own_name is not None:
        from featlab.nets.sr import build_sr_net

        return build_sr_net(own_name, **own_kwargs).eval(), label
    from featlab.nets.published import build_published_size

    return build_published_size(label).eval(), label


def median_ms(run: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def photo_tile(side: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lr, hr)``: an HR crop of an embedded photo (tiled if the photo is smaller) and its MATLAB-bicubic LR."""
    from featlab.data.resize import imresize
    from featlab.data.samples import sample_photos

    photo = next(iter(sample_photos("val").values()))
    hr = torch.from_numpy(photo.copy()).permute(2, 0, 1).float().div(255)
    need = side * scale
    reps = (-(-need // hr.shape[1]), -(-need // hr.shape[2]))
    hr = hr.repeat(1, *reps)[:, :need, :need].unsqueeze(0)
    lr = hr if scale == 1 else imresize(hr, scale=1 / scale).clamp(0, 1)
    return lr, hr


def bench_net(net: nn.Module, label: str, net_id: str, tile: int, paths: list[str], args: DeployBenchArgs,
              workdir: Path) -> NetResult:
    from featlab.nets.sr.swin import WindowAttention, use_fused_attention

    scale = int(getattr(net, "scale", 1))
    lr, hr = photo_tile(tile, scale)
    result = NetResult(net_id, label, sum(p.numel() for p in net.parameters()), tile, real_weights=bool(args.weights))
    has_reference_form = any(isinstance(m, WindowAttention) for m in net.modules())
    with torch.inference_mode():
        use_fused_attention(net, False)
        reference = net(lr)
        reference_ms = median_ms(lambda: net(lr), args.warmup, args.repeats)
        use_fused_attention(net, True)
    result.paths["reference"] = PathResult(ms=reference_ms, speedup=1.0, max_abs_diff=0.0)

    def timed(name: str, run: Callable[[], torch.Tensor], prepare_s: float = 0.0) -> None:
        with torch.inference_mode():
            out = run().float()
            ms = median_ms(run, args.warmup, args.repeats)
        note = f"prepare {prepare_s:.1f} s" if prepare_s else ""
        path = PathResult(ms=ms, speedup=reference_ms / ms, max_abs_diff=float((out - reference).abs().max()), note=note)
        if name in REDUCED_PRECISION:
            path.psnr_loss_db, path.fidelity_db = psnr_cost(out, reference, hr)
        result.paths[name] = path

    for name in paths:
        try:
            if name == "eager":
                if has_reference_form:
                    timed(name, lambda: net(lr))
                else:  # no op has a second formulation: featlab's eager forward is the reference
                    result.paths[name] = PathResult(ms=reference_ms, speedup=1.0, max_abs_diff=0.0, note="= reference")
            elif name == "channels_last":
                with channels_last(net, lr) as (net_cl, lr_cl):
                    timed(name, lambda m=net_cl, x=lr_cl: m(x))
            elif name == "compile":
                start = time.perf_counter()
                compiled = compile_for_inference(net)
                with torch.inference_mode():
                    compiled(lr)
                timed(name, lambda m=compiled: m(lr), time.perf_counter() - start)
            elif name == "onnxruntime":
                result.onnx_ops, result.onnx_nonportable_ops = _onnx_path(net, lr, net_id, workdir, timed, args)
            elif name == "bf16":
                with channels_last(net, lr) as (net_cl, lr_cl):
                    timed(name, lambda m=net_cl, x=lr_cl: bf16_forward(m, x))
            elif name == "bf16_compile":
                with channels_last(net, lr) as (net_cl, lr_cl):
                    start = time.perf_counter()
                    compiled = compile_for_inference(net_cl)
                    with torch.inference_mode():
                        bf16_forward(compiled, lr_cl)
                    timed(name, lambda m=compiled, x=lr_cl: bf16_forward(m, x), time.perf_counter() - start)
            elif name == "int8":
                _int8_path(net, lr, result, timed)
        except Exception as err:  # one path failing (a compiler missing, an exporter gap) must not end the bench
            result.paths[name] = PathResult(note=f"failed: {type(err).__name__}: {str(err).splitlines()[0][:100]}")
    return result


@contextlib.contextmanager
def channels_last(net: nn.Module, lr: torch.Tensor) -> Iterator[tuple[nn.Module, torch.Tensor]]:
    """``(net, lr)`` in channels_last memory format for the block; the net is restored after it."""
    try:
        yield net.to(memory_format=torch.channels_last), lr.contiguous(memory_format=torch.channels_last)
    finally:
        net.to(memory_format=torch.contiguous_format)


def psnr_cost(out: torch.Tensor, reference: torch.Tensor, hr: torch.Tensor) -> tuple[float, float]:
    """``(PSNR loss against HR, fidelity PSNR against the reference)`` of a reduced-precision output, dB."""
    from featlab.metrics.sr import psnr

    out, reference = out.float().clamp(0, 1), reference.clamp(0, 1)
    loss = float(psnr(reference, hr) - psnr(out, hr))
    return loss, float(psnr(out, reference))


def reduced_precision_ok(path: PathResult, real_weights: bool) -> bool:
    """Within the goal: PSNR loss <= 0.1 dB with trained weights; with random weights (whose PSNR
    against HR means nothing) a fidelity of at least ``MIN_FIDELITY_DB`` (see ``MODEL_PSNR_CEILING_DB``)."""
    if real_weights:
        return path.psnr_loss_db is not None and path.psnr_loss_db <= MAX_PSNR_LOSS_DB
    return path.fidelity_db is not None and path.fidelity_db >= MIN_FIDELITY_DB


def _onnx_path(net, lr, net_id, workdir, timed, args) -> tuple[list[str], list[str]]:
    import onnxruntime as ort

    from featlab.tools.export_onnx import export_onnx, onnx_inventory

    start = time.perf_counter()
    path = export_onnx(net, workdir / f"{net_id}.onnx", opset=18, exporter=args.exporter, portable=args.portable)
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: lr.numpy()}
    timed("onnxruntime", lambda: torch.from_numpy(session.run(None, feed)[0]), time.perf_counter() - start)
    ops = onnx_inventory(path)
    return ops, [op for op in ops if op not in CONSERVATIVE_OPS]


def _int8_path(net: nn.Module, lr: torch.Tensor, result: NetResult, timed: Callable) -> None:
    linears = sum(isinstance(m, nn.Linear) for m in net.modules())
    if not linears:
        result.paths["int8"] = PathResult(note="no Linear layers: dynamic int8 does not apply")
        return
    quantized = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8, inplace=False)
    timed("int8", lambda: quantized(lr))
    result.paths["int8"].note = f"{linears} Linear layers quantised"


def best_path(net: NetResult) -> tuple[str, float]:
    """The fastest path within the accuracy goal: fp32 max abs diff <= ``FP32_ATOL``, reduced
    precision by :func:`reduced_precision_ok`."""
    ok = {name: r for name, r in net.paths.items() if r.ms is not None and (
        reduced_precision_ok(r, net.real_weights) if name in REDUCED_PRECISION
        else r.max_abs_diff is not None and r.max_abs_diff <= FP32_ATOL)}
    name = min(ok, key=lambda n: ok[n].ms)
    return name, ok[name].speedup or 1.0


def markdown(results: list[NetResult], header: str) -> str:
    def cell(name: str, r: PathResult | None) -> str:
        if r is None:
            return ""
        if r.ms is None:
            return r.note.split(":")[0]
        if name == "reference":
            return f"{r.ms:.3g} ms"
        extra = f", {-r.psnr_loss_db:+.2f} dB, fidelity {r.fidelity_db:.1f} dB" if r.fidelity_db is not None else ""
        return f"{r.ms:.3g} ms ({r.speedup:.2f}x{extra})"

    columns = ("reference", *PATHS)
    lines = [header, "", "| net | params | tile | " + " | ".join(columns) + " | best | ONNX ops outside the list |",
             "|---|---:|---:|" + "---|" * len(columns) + "---|---|"]
    for res in results:
        best, speedup = best_path(res)
        cells = " | ".join(cell(p, res.paths.get(p)) for p in columns)
        lines.append(f"| {res.label} | {res.params:,} | {res.tile} | {cells} | {best} {speedup:.2f}x | "
                     f"{', '.join(res.onnx_nonportable_ops) or '-'} |")
    return "\n".join(lines) + "\n"


def bf16_kernels() -> str:
    """What the CPU offers bf16 matmuls and convolutions (the bf16 path is slow without them)."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    found = [name for name in ("amx_bf16", "avx512_bf16") if name in flags]
    return ", ".join(found) or "none found (bf16 is emulated and slow)"


def run(args: DeployBenchArgs) -> list[NetResult]:
    nets = _choices(args.nets, NETS, "nets")
    paths = _choices(args.paths, PATHS, "paths")
    require(not args.weights or len(nets) == 1, "weights", "a weight file belongs to one net: set nets=<its id>")
    require(args.repeats >= 1 and args.warmup >= 0, "repeats", "need repeats >= 1 and warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    lr_tiles = [int(t) for t in args.lr_tiles.split(",") if t.strip()]
    header = (f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"median of {args.repeats} after {args.warmup} warm-up; the fp32 reference formulation is the baseline; "
              f"bf16 kernels: {bf16_kernels()}")
    print(header, flush=True)
    results: list[NetResult] = []
    with tempfile.TemporaryDirectory(prefix="featlab-deploy-") as tmp:
        for net_id in nets:
            net, label = build(net_id, args.weights)
            for tile in (lr_tiles if int(getattr(net, "scale", 1)) > 1 else [args.tile_1x]):
                res = bench_net(net, label, net_id, tile, paths, args, Path(tmp))
                results.append(res)
                print(markdown([res], "").splitlines()[-1], flush=True)
    out = Path(args.output).expanduser()
    write_text(out, json.dumps({"header": header, "results": [asdict(r) for r in results]}, indent=2))
    write_text(out.with_suffix(".md"), markdown(results, header))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return results


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, DeployBenchArgs, argv)


if __name__ == "__main__":
    raise SystemExit(main())

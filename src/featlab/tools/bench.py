"""Training-step benchmark: several variants side by side in ONE process, reported as ratios.

``python -m featlab.tools.bench experiment=sisr_dino bench=sisr_perceptual``
``python -m featlab.tools.bench experiment=sisr_dino bench.variants=[l1,dino_last] bench.steps=50``

Each variant is a list of config overrides (``bench.presets``) applied on top of the given
experiment. Steps run on synthetic batches (``task.synthetic_batch``) so data loading is not
measured; the first variant is the baseline of the ratio columns.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from featlab.cli import exit_on_user_error, wants_help
from featlab.config import compose, config_dir
from featlab.errors import ConfigError, unknown_name
from featlab.files import write_text
from featlab.interface import CountsImages
from featlab.optim import build_optimizer, instantiate_optimizer

# Dense bf16 peak FLOP/s per device name fragment, for model-FLOPs utilisation.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


@dataclass
class BenchResult:
    variant: str
    images_per_s: float
    step_ms: float
    peak_memory_mb: float
    tflops_per_step: float
    mfu: float | None


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("bench.device", "CUDA is not available on this machine; use bench.device=cpu")
    return torch.device(name)


def build_task(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    task = instantiate(cfg.task, _recursive_=False)
    task.to(device)
    if cfg.get("compile"):
        task.compile_networks()
    return task


def bench_variant(name: str, cfg: DictConfig, bench: DictConfig, device: torch.device) -> BenchResult:
    """Time ``bench.steps`` training steps after ``bench.warmup`` untimed ones."""
    torch.manual_seed(0)
    task = build_task(cfg, device)
    task.train()
    if "_target_" in task.optim_cfg:
        optimizer = instantiate_optimizer(task.optimizer_parameters(), task.optim_cfg)
    else:
        optimizer = build_optimizer(task.optimizer_parameters(), **task.optim_cfg)
    batch = task.synthetic_batch(int(bench.batch_size), device, **OmegaConf.to_container(bench.batch_kwargs))
    use_bf16 = bench.precision == "bf16" or (bench.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    images = task.images_in_batch(batch) if isinstance(task, CountsImages) else int(bench.batch_size)

    def step(i: int) -> None:
        with autocast:
            task.bench_step(batch, optimizer, i)

    for i in range(int(bench.warmup)):
        step(i)
    with FlopCounterMode(display=False) as counter:
        step(int(bench.warmup))
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(int(bench.steps)):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    step_s = elapsed / int(bench.steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    peak_flops = device_peak_flops(device)
    return BenchResult(name, images / step_s, step_s * 1000, peak, flops / 1e12,
                       (flops / step_s) / peak_flops if peak_flops else None)


def format_table(results: list[BenchResult]) -> str:
    base = results[0]
    lines = ["| variant | img/s | step ms | peak MiB | TFLOP/step | MFU | img/s ratio | step ratio | memory ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        mem_ratio = r.peak_memory_mb / base.peak_memory_mb if base.peak_memory_mb == base.peak_memory_mb else float("nan")
        lines.append(
            f"| {r.variant} | {r.images_per_s:.1f} | {r.step_ms:.1f} | {r.peak_memory_mb:.0f} | "
            f"{r.tflops_per_step:.3f} | {mfu} | {r.images_per_s / base.images_per_s:.2f} | "
            f"{r.step_ms / base.step_ms:.2f} | {mem_ratio:.2f} |"
        )
    return "\n".join(lines)


def with_bench_group(overrides: list[str]) -> list[str]:
    """``bench=X`` selects conf/bench/X.yaml, which train.yaml does not list: add it with ``+``."""
    out = [("+" + o) if o.startswith("bench=") else o for o in overrides]
    if not any(o.startswith("+bench=") for o in out):
        out.insert(0, "+bench=default")
    return out


def run_bench(overrides: list[str]) -> list[BenchResult]:
    # Tasks log from training_step; outside a Trainer that is a no-op, and the warning is noise here.
    warnings.filterwarnings("ignore", message=".*self.log.*trainer.*")
    torch.set_float32_matmul_precision("high")  # TF32 for fp32 matmuls, as train.py runs them
    base_cfg = compose(with_bench_group(overrides))
    bench = base_cfg.bench
    device = resolve_device(str(bench.device))
    presets = bench.presets
    results = []
    for name in bench.variants:
        if name not in presets:
            raise unknown_name("bench.variants", name, presets.keys(), "bench variant")
        cfg = compose(with_bench_group([*overrides, *presets[name]]))
        results.append(bench_variant(name, cfg, bench, device))
        if device.type == "cuda":  # the variant's model and optimiser are out of scope now
            torch.cuda.empty_cache()
        print(f"  {name}: {results[-1].images_per_s:.1f} img/s", file=sys.stderr)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    table = format_table(results)
    print(f"device: {device_name}; batch {bench.batch_size}; {bench.steps} timed steps after {bench.warmup}")
    print(table)
    if bench.get("out"):
        out = Path(str(bench.out))
        write_text(out, json.dumps({"device": device_name, "overrides": overrides,
                                   "results": [asdict(r) for r in results], "table": table}, indent=2))
    return results


def usage() -> str:
    """``--help``: this module's doc and the ``bench.*`` keys as conf/bench/default.yaml documents them."""
    keys = (config_dir() / "bench" / "default.yaml").read_text().splitlines()
    presets = sorted(p.stem for p in (config_dir() / "bench").glob("*.yaml"))
    return "\n".join([
        "usage: featlab bench experiment=<name> [bench=<preset>] [bench.key=value ...] [training overrides]",
        "", __doc__.strip(), "", f"bench presets: {', '.join(presets)}", "",
        "keys (bench.<key>=value; default shown):", *(f"  {line}" for line in keys if not line.startswith("#")),
        "", "Any other key=value overrides the training config: see featlab train --help.",
    ])


def main(argv: list[str] | None = None) -> Any:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(usage())
        return 0
    return exit_on_user_error(lambda: run_bench(args))


if __name__ == "__main__":
    main()

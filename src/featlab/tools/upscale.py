"""Upscale an image or a folder of images with a trained SR checkpoint.

    python -m featlab.tools.upscale ckpt_path=run/last.ckpt input=photo.png output=out/ \
        [tile=128 overlap=16 batch_tiles=8 device=auto blend=feather precision=fp32 compile=false]

Every image runs through :func:`featlab.tools.tiled.tiled_forward`, so size is bounded by
disk, not GPU memory; results are written as PNG (``<output>/<relative path>/<stem>.png``).
``precision=bf16`` / ``compile=true`` are the fast paths ``featlab deploy-bench`` measures
(:mod:`featlab.tools.fast_inference`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featlab.cli import run_cli
from featlab.data.images import IMAGE_EXTENSIONS, UNREADABLE, list_images, load_rgb, reason
from featlab.errors import ConfigError, require
from featlab.files import write_with
from featlab.tools.checkpoint import load_net_from_checkpoint, resolve_checkpoint
from featlab.tools.fast_inference import PRECISIONS, fast_forward
from featlab.tools.tiled import tiled_forward

log = logging.getLogger(__name__)


@dataclass
class UpscaleArgs:
    """Command-line keys; ``???`` marks the required ones."""

    ckpt_path: str = "???"       # SR checkpoint (runs/.../*.ckpt) or published file (RealESRGAN_x4plus.pth, ...)
    input: str = "???"           # an image, or a folder searched recursively
    output: str = "???"          # folder for the PNG results (input layout kept)
    tile: int = 128              # LR tile size: bounds memory, not image size
    overlap: int = 16            # LR pixels shared by neighbouring tiles
    batch_tiles: int = 8         # tiles per forward pass
    device: str = "auto"         # auto (CUDA if present), cpu, cuda, cuda:1, ...
    blend: str = "feather"       # how overlapping tiles are merged (feather | crop)
    precision: str = "fp32"      # fp32 | bf16 (autocast; 2-7x faster on CPUs with AMX / AVX-512-BF16, see deploy-bench)
    compile: bool = False        # torch.compile with frozen weights (compiles once per tile shape: for big batches)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; anything else must be a valid torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError("device", f"'{name}' is not a torch device (auto, cpu, cuda, cuda:1, ...)") from err
    require(
        device.type != "cuda" or torch.cuda.is_available(),
        "device",
        f"'{name}' requested but CUDA is unavailable",
    )
    return device


def input_images(path: Path) -> tuple[Path, list[Path]]:
    """``(root, files)`` for a single image or a folder searched recursively."""
    if path.is_file():
        require(
            path.suffix.lower() in IMAGE_EXTENSIONS,
            "input",
            f"'{path}' is not an image ({', '.join(IMAGE_EXTENSIONS)})",
        )
        return path.parent, [path]
    if not path.exists():
        raise ConfigError("input", f"'{path}' does not exist; pass an image or a folder of images")
    return path, list_images(path, "input")


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float ``(1, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_image(sr: torch.Tensor) -> Image.Image:
    """float ``(1, 3, H, W)`` -> 8-bit RGB image (clamped, rounded)."""
    arr = sr[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def plan_outputs(root: Path, files: list[Path], out_dir: Path) -> dict[Path, Path]:
    """``{input: output PNG}``; refuses any plan that would overwrite an input or write two
    inputs to one file (``a.png`` and ``a.jpg`` both map to ``a.png``)."""
    inputs = {f.resolve() for f in files}
    plan: dict[Path, Path] = {}
    seen: dict[Path, Path] = {}
    for file in files:
        target = (out_dir / file.relative_to(root)).with_suffix(".png")
        resolved = target.resolve()
        if resolved in inputs:
            raise ConfigError("output", f"writing '{target}' would overwrite the input '{file}'; choose another output folder")
        if resolved in seen:
            raise ConfigError(
                "output", f"'{seen[resolved]}' and '{file}' would both be written to '{target}'; rename one of them"
            )
        seen[resolved] = file
        plan[file] = target
    return plan


def upscale(args: UpscaleArgs) -> list[Path]:
    """Upscale every input image; returns the written paths (each written atomically)."""
    resolve_checkpoint(args.ckpt_path)
    root, files = input_images(Path(args.input).expanduser())
    out_dir = Path(args.output).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("output", f"'{out_dir}' is a file; output must be a folder (it is created if missing)")
    if Path(args.input).expanduser().is_dir() and out_dir.resolve() == root.resolve():
        raise ConfigError("output", f"'{out_dir}' is the input folder; choose another output folder")
    require(args.precision in PRECISIONS, "precision", f"'{args.precision}' is not one of {', '.join(PRECISIONS)}")
    plan = plan_outputs(root, files, out_dir)  # before the (slow) model load: bad plans fail fast
    device = resolve_device(args.device)
    net, hparams = load_net_from_checkpoint(args.ckpt_path, map_location="cpu")
    net = net.to(device)
    scale = int(getattr(net, "scale", None) or hparams["scale"])  # the net's own scale is the truth
    forward = fast_forward(net, device, args.precision, args.compile)
    written: list[Path] = []
    skipped: list[Path] = []
    for index, (file, target) in enumerate(plan.items(), 1):
        try:
            rgb = load_rgb(file)
        except (*UNREADABLE, ConfigError) as err:  # truncated, oversize (a decompression bomb), not an image
            print(f"[{index}/{len(plan)}] skipping unreadable image {file} ({reason(err)})")
            skipped.append(file)
            continue
        start = time.perf_counter()
        sr = tiled_forward(forward, to_tensor(rgb), scale, args.tile, args.overlap, args.batch_tiles, args.blend)
        image = to_image(sr)
        write_with(target, lambda buffer, image=image: image.save(buffer, format="PNG"))
        written.append(target)
        seconds = time.perf_counter() - start
        print(f"[{index}/{len(plan)}] {file} -> {target} (x{scale}, {rgb.shape[1]}x{rgb.shape[0]} px, {seconds:.1f} s)",
              flush=True)
    if skipped:
        print(f"{len(skipped)} unreadable image(s) skipped, {len(written)} written")
    return written


def main(argv: list[str] | None = None) -> int:
    return run_cli(upscale, UpscaleArgs, argv)


if __name__ == "__main__":
    raise SystemExit(main())

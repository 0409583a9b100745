"""The ``featlab`` console script: one command, one subcommand per entry point.

    featlab train experiment=sisr_dino pretrained=false     (= python train.py ...)
    featlab eval ckpt_path=runs/.../best.ckpt
    featlab upscale ckpt_path=... input=photo.png output=out/
    featlab export ckpt_path=... output=model.onnx
    featlab bench experiment=sisr_dino bench=sisr_perceptual
    featlab report runs/<study>/multirun-...

``featlab <subcommand> --help`` lists that subcommand's keys with their defaults. Subcommands are
imported only when run, so ``featlab --help`` and a mistyped name answer without loading torch.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from featlab.errors import unknown_name


@dataclass(frozen=True)
class Command:
    module: str
    function: str
    summary: str


COMMANDS: dict[str, Command] = {
    "train": Command("featlab.train", "cli", "train one configuration, or a sweep with -m (Hydra overrides)"),
    "eval": Command("featlab.eval", "main", "test a checkpoint, on its own data or on other data"),
    "upscale": Command("featlab.tools.upscale", "main", "upscale an image or a folder with an SR checkpoint"),
    "export": Command("featlab.tools.export_onnx", "main", "export an SR checkpoint to ONNX and verify it"),
    "bench": Command("featlab.tools.bench", "main", "time training-step variants side by side, as ratios"),
    "deploy-bench": Command("featlab.tools.deploy_bench", "main",
                            "CPU inference cost of each SR net per path (eager, channels_last, compile, ONNX, int8)"),
    "report": Command("featlab.tools.report", "main", "markdown tables and plots from run directories"),
    "paired-identification": Command("featlab.tools.paired_identification", "main",
                                     "face-identification runs differenced against a baseline, probe by probe"),
    "fit-recognizer": Command("featlab.tools.fit_recognizer", "main",
                              "fit an EdgeFace recogniser for the face DSR identity loss"),
    "movi-convert": Command("featlab.tools.movi_convert", "main", "convert MOVi (Kubric) exports to scene folders"),
}


def program_name(module: str) -> str:
    """``featlab <subcommand>`` for an entry point's module (usage lines name the console script)."""
    for name, command in COMMANDS.items():
        if command.module == module:
            return f"featlab {name}"
    return f"python -m {module}"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: featlab <subcommand> [key=value ...]   (featlab <subcommand> --help for its keys)", "",
             "subcommands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``featlab <subcommand> ...`` to the entry point; its return value is the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS and "=" in name and os.environ.get("LOCAL_RANK"):
        # Lightning starts DDP ranks > 0 by re-running sys.argv, which holds train's overrides only.
        name, rest = "train", args
    if name not in COMMANDS:
        print(f"featlab: error: {unknown_name('subcommand', name, COMMANDS, 'subcommand')}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    entry = getattr(importlib.import_module(command.module), command.function)
    # Hydra apps read sys.argv themselves; argv[0] stays the script, which Lightning re-runs for DDP.
    saved = sys.argv
    sys.argv = [sys.argv[0], *rest]
    try:
        result = entry(rest) if command.function != "cli" else entry()
    finally:
        sys.argv = saved
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``results.json`` per run: the single file the report tool and sweep comparisons read."""

from __future__ import annotations

import logging
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from featlab.callbacks.throughput import ThroughputMonitor
from featlab.data.images import skipped_files
from featlab.files import WriteError, disk_usage, write_json
from featlab.interface import HasExtraResults
from featlab.loggers import WandbRun

log = logging.getLogger(__name__)


def git_commit() -> str | None:
    """The commit of the source tree, with ``+dirty`` when it has local changes."""
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _plain_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class ResultsWriter(L.Callback):
    """Collects final metrics after fit and test and writes them with the config and speed.

    The file is rewritten after each stage, so a run that dies in testing still leaves its training
    results, and a run that raises leaves ``status: failed`` with the error.
    """

    def __init__(self, run_dir: str | Path, config: dict | None = None, filename: str = "results.json") -> None:
        self.path = Path(run_dir) / filename
        self.config = config or {}
        self.metrics: dict[str, Any] = {}
        self.status = "running"
        self.error: str | None = None
        self.resumed_from: str | None = None  # the checkpoint this attempt of the run started from
        self.started = time.time()

    def _collect(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():
            self.metrics[key] = _plain_number(value)
        if isinstance(pl_module, HasExtraResults):
            self.metrics.update({k: _plain_number(v) for k, v in pl_module.extra_results().items()})

    def on_fit_end(self, trainer, pl_module) -> None:
        self.status = "finished"
        self._collect(trainer, pl_module)
        self.write(trainer, pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        self.status = "finished"
        self._collect(trainer, pl_module)
        self.write(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.status = "interrupted" if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) else "failed"
        self.error = f"{type(exception).__name__}: {exception}"
        self.write(trainer, pl_module)

    def write(self, trainer: L.Trainer | None = None, pl_module: L.LightningModule | None = None) -> dict:
        """Write (rank 0 only) and return the results dict."""
        speed: dict[str, float] = {}
        if trainer is not None:
            for cb in trainer.callbacks:  # type: ignore[attr-defined]
                if isinstance(cb, ThroughputMonitor):
                    speed = dict(cb.summary)
        best = None
        if trainer is not None and trainer.checkpoint_callback is not None:
            ckpt = trainer.checkpoint_callback
            best = {"path": getattr(ckpt, "best_model_path", None) or None,
                    "score": _plain_number(getattr(ckpt, "best_model_score", None))}
        results = {
            "status": self.status,
            "error": self.error,
            "metrics": dict(sorted(self.metrics.items())),
            "speed": speed,
            "best_checkpoint": best,
            "epochs": trainer.current_epoch if trainer is not None else None,
            "global_step": trainer.global_step if trainer is not None else None,
            "wall_time_s": round(time.time() - self.started, 3),
            "resumed_from": self.resumed_from,
            "skipped_files": skipped_files(),
            "git_commit": git_commit(),
            "config": self.config,
        }
        if trainer is None or trainer.is_global_zero:
            results["disk_use_bytes"] = disk_usage(self.path.parent)
            try:
                write_json(self.path, results)
            except WriteError as err:
                if self.status != "failed":
                    raise
                # the run is already failing (often for the same full disk): keep its own error
                log.error("%s", err)
        return results


def run_summary(results: dict, results_path: Path, monitor: str, wandb: WandbRun | None = None) -> str:
    """The lines a run ends with: its best value of the monitored metric, where results.json and
    the kept checkpoints are, and where its W&B run is (the page, or the command that uploads an
    offline run). What a researcher looks for after a long run, without searching the log."""
    run_dir = results_path.parent
    best = results.get("best_checkpoint") or {}
    value = best.get("score")
    if value is None:
        value = (results.get("metrics") or {}).get(monitor)
    if isinstance(value, float):
        value = f"{value:.6g}"
    where = f" (checkpoint {Path(best['path']).name})" if best.get("path") else ""
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    lines = [
        f"run {results.get('status')}: {run_dir}",
        f"  best {monitor}: {value if value is not None else 'n/a'}{where}",
        f"  results: {results_path}",
        f"  checkpoints: {', '.join(checkpoints) if checkpoints else 'none kept'}"
        + (f" (in {run_dir / 'checkpoints'})" if checkpoints else ""),
    ]
    if wandb is not None and wandb.url:
        lines.append(f"  W&B: {wandb.url}")
    elif wandb is not None and wandb.sync_command:
        lines.append(f"  W&B ran offline; upload with: {wandb.sync_command}")
    return "\n".join(lines)

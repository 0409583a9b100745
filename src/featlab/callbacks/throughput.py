"""Training throughput and peak memory, measured without syncing the GPU every step."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning as L
import torch

from featlab.interface import CountsImages


def batch_size_of(batch: Any) -> int:
    """Images in a batch: tasks may define ``images_in_batch``; otherwise the first tensor's length."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = batch_size_of(item)
            if size:
                return size
    return 0


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak CUDA memory allocated on ``device``, or the process' peak RSS on CPU."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class ThroughputMonitor(L.Callback):
    """Images per second and step time over the training steps after ``warmup_steps``.

    Time is read only at logging intervals and at epoch end, with one ``synchronize`` there, so the
    measurement does not itself serialise the GPU.
    """

    def __init__(self, warmup_steps: int = 5, log_every_n_steps: int = 50) -> None:
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = log_every_n_steps
        self.images = 0
        self.steps = 0
        self.start: float | None = None
        self.seen_steps = 0
        self.summary: dict[str, float] = {}

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen_steps += 1
        if self.seen_steps == self.warmup_steps or (self.warmup_steps == 0 and self.start is None):
            self._sync(pl_module)
            self.start = time.perf_counter()
            self.images, self.steps = 0, 0
            return
        if self.start is None:
            return
        self.images += pl_module.images_in_batch(batch) if isinstance(pl_module, CountsImages) else batch_size_of(batch)
        self.steps += 1
        if self.steps % self.log_every_n_steps == 0:
            self._update(pl_module)
            pl_module.log("perf/images_per_s", self.summary["images_per_s"], on_step=True, on_epoch=False)

    def _update(self, pl_module: L.LightningModule) -> None:
        if self.start is None or self.steps == 0:
            return
        self._sync(pl_module)
        elapsed = time.perf_counter() - self.start
        world = max(1, getattr(pl_module.trainer, "world_size", 1))
        self.summary = {
            "images_per_s": self.images * world / elapsed,
            "step_ms": 1000.0 * elapsed / self.steps,
            "measured_steps": float(self.steps),
            "peak_memory_mb": peak_memory_mb(pl_module.device),
        }

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._update(pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._update(pl_module)
        if not self.summary:
            self.summary = {"peak_memory_mb": peak_memory_mb(pl_module.device)}

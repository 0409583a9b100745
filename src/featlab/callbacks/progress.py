"""Progress as plain log lines, for output that is not a terminal (a file, a pipe, a SLURM log).

A progress bar redraws one line with carriage returns: in a file it is either nothing or a wall of
fragments. When stdout is not a terminal, ``ProgressLog`` replaces it (``featlab.train`` turns the
bar off) with a line at a fixed interval of time and/or steps::

    train epoch 2/80 step 130/1280 (10%) 1.84 it/s ETA 10:25 | val/psnr=23.41 train/loss=0.0812

on the console and in the run's ``train.log``. In a terminal the bar stays and the lines go to
``train.log`` only, so ``tail -f train.log`` from another shell shows the same progress.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable

import lightning as L

from featlab.errors import require
from featlab.runlog import record

log = logging.getLogger(__name__)
CONSOLE_MODES = ("auto", "always", "never")


def stdout_is_terminal() -> bool:
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def format_duration(seconds: float) -> str:
    """``mm:ss`` or ``h:mm:ss``; ``?`` while there is no estimate."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Interval:
    """When the next line is due: every ``every_s`` seconds and/or every ``every_n_steps`` steps.

    The clock is injected (``time.monotonic`` by default) so the rule can be tested without waiting.
    """

    def __init__(self, every_s: float | None, every_n_steps: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        require(every_s is None or every_s > 0, "callbacks.progress.every_s", f"must be positive or null, got {every_s}")
        require(every_n_steps is None or every_n_steps >= 1, "callbacks.progress.every_n_steps",
                f"must be >= 1 or null, got {every_n_steps}")
        require(every_s is not None or every_n_steps is not None, "callbacks.progress",
                "set every_s or every_n_steps (or drop the callback: callbacks.progress=null)")
        self.every_s = every_s
        self.every_n_steps = every_n_steps
        self.clock = clock
        self.last_time = clock()
        self.last_step = 0

    def restart(self, step: int = 0) -> None:
        self.last_time, self.last_step = self.clock(), step

    def due(self, step: int) -> bool:
        """Whether a line is due at ``step``; if so, the interval restarts from here."""
        now = self.clock()
        by_time = self.every_s is not None and now - self.last_time >= self.every_s
        by_steps = self.every_n_steps is not None and step - self.last_step >= self.every_n_steps
        if by_time or by_steps:
            self.last_time, self.last_step = now, step
            return True
        return False


class Rate:
    """Steps per second over the fit so far, and the time left at that rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start_time: float | None = None
        self.start_step = 0

    def start(self, step: int) -> None:
        self.start_time, self.start_step = self.clock(), step

    def per_second(self, step: int) -> float:
        if self.start_time is None:
            return float("nan")
        elapsed = self.clock() - self.start_time
        return (step - self.start_step) / elapsed if elapsed > 0 and step > self.start_step else float("nan")

    def eta(self, step: int, total: float) -> float:
        rate = self.per_second(step)
        return (total - step) / rate if math.isfinite(total) and rate > 0 else float("nan")


class ProgressLog(L.Callback):
    """Plain progress lines with epoch, step/total, it/s, ETA and the monitored metric.

    Args:
        every_s: a line at least this often (seconds of wall time); null: steps only.
        every_n_steps: a line every this many optimiser steps; null: time only.
        console: ``auto`` writes lines to the console when stdout is not a terminal (and the run
            turns the progress bar off); ``always`` / ``never`` force it. ``train.log`` always gets them.
        metrics: extra logged values to show beside the monitored metric (if logged).
    """

    def __init__(self, every_s: float | None = 30.0, every_n_steps: int | None = None, console: str = "auto",
                 metrics: list[str] | tuple[str, ...] = ("train/loss",),
                 clock: Callable[[], float] = time.monotonic) -> None:
        require(console in CONSOLE_MODES, "callbacks.progress.console", f"must be one of {CONSOLE_MODES}, got {console!r}")
        self.interval = Interval(every_s, every_n_steps, clock)
        self.rate = Rate(clock)
        self.console = console
        self.metrics = tuple(metrics)
        self.clock = clock

    @property
    def to_console(self) -> bool:
        """Whether the lines go to the console (then they replace the progress bar there)."""
        return self.console == "always" or (self.console == "auto" and not stdout_is_terminal())

    def emit(self, line: str) -> None:
        if self.to_console:
            log.info(line)  # propagates to the console handlers and to train.log
            return
        record(log.name, logging.INFO, line)  # the bar has the console: train.log only

    # -- what a line says ---------------------------------------------------------------------------
    def monitored(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
        names = []
        monitor = (getattr(pl_module, "monitor_cfg", None) or {}).get("metric")
        if monitor:
            names.append(monitor)
        names += [m for m in self.metrics if m not in names]
        shown = []
        for name in names:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                shown.append(f"{name}={float(value):.4g}")
            elif name == monitor:
                shown.append(f"{name}=n/a")  # not evaluated yet
        return shown

    def fit_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        step = int(trainer.global_step)
        total = float(trainer.estimated_stepping_batches)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        total_text = f"{int(total)}" if math.isfinite(total) else "?"
        share = f" ({100.0 * step / total:.0f}%)" if math.isfinite(total) and total > 0 else ""
        rate = self.rate.per_second(step)
        rate_text = f"{rate:.3g} it/s" if math.isfinite(rate) else "? it/s"
        eta = format_duration(self.rate.eta(step, total))
        parts = [f"train epoch {trainer.current_epoch + 1}/{epochs} step {step}/{total_text}{share}",
                 rate_text, f"ETA {eta}"]
        metrics = self.monitored(trainer, pl_module)
        return " ".join(parts) + (" | " + " ".join(metrics) if metrics else "")

    @staticmethod
    def eval_line(stage: str, trainer: L.Trainer, batch_idx: int, dataloader_idx: int) -> str:
        counts = trainer.num_val_batches if stage == "validate" else trainer.num_test_batches
        count = counts[dataloader_idx] if dataloader_idx < len(counts) else float("nan")
        total = f"{int(count)}" if math.isfinite(count) else "?"
        loader = f" loader {dataloader_idx + 1}/{len(counts)}" if len(counts) > 1 else ""
        return f"{stage}{loader} batch {batch_idx + 1}/{total}"

    # -- when --------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self.rate.start(int(trainer.global_step))
        self.interval.restart(int(trainer.global_step))
        if trainer.is_global_zero:
            total = float(trainer.estimated_stepping_batches)
            self.emit(f"training: {int(total) if math.isfinite(total) else '?'} steps, "
                      f"{trainer.max_epochs} epochs of {trainer.num_training_batches} batches")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero and self.interval.due(int(trainer.global_step)):
            self.emit(self.fit_line(trainer, pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:  # validation has run: the line carries the epoch's monitored value
            self.emit(self.fit_line(trainer, pl_module).replace("train epoch", "end of epoch", 1))
            self.interval.restart(int(trainer.global_step))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking and self.interval.due(int(trainer.global_step)):
            self.emit(self.eval_line("validate", trainer, batch_idx, dataloader_idx))

    def on_test_start(self, trainer, pl_module) -> None:
        self.interval.restart(int(trainer.global_step))
        if trainer.is_global_zero:
            count = sum(int(n) for n in trainer.num_test_batches if math.isfinite(n))
            self.emit(f"test stage: {count} batch{'es' if count != 1 else ''}")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        # steps do not advance in the test stage: only the time rule applies
        if trainer.is_global_zero and self.interval.due(self.interval.last_step):
            self.emit(self.eval_line("test", trainer, batch_idx, dataloader_idx))

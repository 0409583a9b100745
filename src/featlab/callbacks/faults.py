"""Test-only fault injection: kill the training process at a chosen point to prove resumption.

Inert unless ``FEATLAB_FAULT`` is set (featlab.train adds this callback only then). The value is
``<SIGNAL>@<point>:<n>``: send SIGTERM or SIGKILL to this process the ``n``-th time ``point`` is
reached. Points: ``train_batch_start``, ``train_batch_end``, ``validation_batch_end``,
``validation_start``, ``train_epoch_end``, ``save`` (inside a checkpoint write, after the data is
on disk and before the rename). Example: ``FEATLAB_FAULT=SIGKILL@save:2``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import lightning as L

from featlab import files
from featlab.errors import ConfigError

ENV = "FEATLAB_FAULT"
POINTS = ("train_batch_start", "train_batch_end", "validation_batch_end", "validation_start",
          "train_epoch_end", "save")


def parse_fault(spec: str) -> tuple[signal.Signals, str, int]:
    try:
        sig_name, rest = spec.split("@", 1)
        point, count = rest.rsplit(":", 1)
        sig = signal.Signals[sig_name.upper()]
        n = int(count)
    except (ValueError, KeyError) as err:
        raise ConfigError(ENV, f"expected <SIGNAL>@<point>:<n>, got '{spec}'") from err
    if point not in POINTS:
        raise ConfigError(ENV, f"unknown point '{point}'. Valid: {', '.join(POINTS)}")
    return sig, point, n


class FaultInjector(L.Callback):
    def __init__(self, spec: str) -> None:
        self.signal, self.point, self.n = parse_fault(spec)
        self.seen: Counter[str] = Counter()
        if self.point == "save":
            files.BEFORE_COMMIT = self._on_commit

    def _hit(self, point: str) -> None:
        if point != self.point:
            return
        self.seen[point] += 1
        if self.seen[point] == self.n:
            os.kill(os.getpid(), self.signal)

    def _on_commit(self, tmp: Path, target: Path) -> None:
        if target.suffix == ".ckpt":
            self._hit("save")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._hit("train_batch_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._hit("train_batch_end")

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._hit("validation_start")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._hit("validation_batch_end")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._hit("train_epoch_end")

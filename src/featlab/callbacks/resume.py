"""Exact resumption: RNG state in checkpoints, and a checkpoint when the job is told to stop.

Lightning restores weights, optimiser, scheduler and loop progress; without the RNG state the
resumed run draws different crops and augmentations and diverges from an uninterrupted one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from featlab.data.resumable import ResumableLoader

log = logging.getLogger(__name__)


def _train_loaders(trainer: L.Trainer) -> list:
    loaders = trainer.train_dataloader
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


class RNGState(L.Callback):
    """Saves and restores Python, NumPy, torch (and CUDA) random states with each checkpoint.

    It also advances the position of resumable training loaders once a batch's step has finished
    (counting fetches would be wrong: Lightning prefetches a batch ahead), so a checkpoint taken
    mid-epoch records exactly the batches already trained on.
    """


    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Lightning restores loader positions only if the loader is created after the restore; a
        # scheduler sized by ``estimated_stepping_batches`` creates it before, so we do it ourselves.
        fit_state = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("state_dict") or {}
        self._loader_states = list(fit_state.get("combined_loader") or [])

    def on_train_start(self, trainer, pl_module) -> None:
        states = getattr(self, "_loader_states", None)
        self._loader_states = None
        if not states:
            return
        resumable = [loader for loader in _train_loaders(trainer) if isinstance(loader, ResumableLoader)]
        for loader, state in zip(resumable, states, strict=False):
            loader.load_state_dict(state)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for loader in _train_loaders(trainer):
            if isinstance(loader, ResumableLoader):
                loader.note_batch_done()

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # Plain ints/lists only, so checkpoints stay loadable with torch.load(weights_only=True).
        numpy_state = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class _HeldSigterm:
    """Mixed into Lightning's signal connector: ``received_sigterm`` reads False while ``_hold``."""

    _flag = False
    _hold = False

    @property
    def received_sigterm(self) -> bool:
        return self._flag and not self._hold

    @received_sigterm.setter
    def received_sigterm(self, value: bool) -> None:
        self._flag = value


class CheckpointOnSignal(L.Callback):
    """``last.ckpt`` is always the newest state: written on SIGTERM (pre-emption, ``scancel``,
    ``kill``) before Lightning exits, and at the end of training (ModelCheckpoint writes it only after
    validation, so a run ending on ``max_steps`` mid-epoch would otherwise leave an older one)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "checkpoints" / "last.ckpt"

    # A SIGTERM during validation waits for the validation to end: Lightning would stop mid-way and
    # the resumed run would never log (or checkpoint on) that epoch's validation. Lightning's signal
    # handler sets ``received_sigterm`` at any moment, so the flag is held back while validating.
    def on_fit_start(self, trainer, pl_module) -> None:
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and not isinstance(connector, _HeldSigterm) and "received_sigterm" in vars(connector):
            flag = vars(connector).pop("received_sigterm")
            connector.__class__ = type("HeldSigterm", (_HeldSigterm, type(connector)), {})
            connector._flag, connector._hold = flag, False

    def on_validation_start(self, trainer, pl_module) -> None:
        if isinstance(getattr(trainer, "_signal_connector", None), _HeldSigterm) and not trainer.sanity_checking:
            trainer._signal_connector._hold = True

    def on_validation_end(self, trainer, pl_module) -> None:
        if isinstance(getattr(trainer, "_signal_connector", None), _HeldSigterm):
            trainer._signal_connector._hold = False  # a held SIGTERM now stops training at the next check

    def on_train_end(self, trainer, pl_module) -> None:
        keeps_last = any(isinstance(cb, ModelCheckpoint) and cb.save_last for cb in trainer.callbacks)
        if keeps_last and not trainer.fast_dev_run:
            # weights_only=False here means "save optimiser, loops and RNG too" (a resumable file);
            # every load goes through SafeCheckpointIO with torch.load(weights_only=True)
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path, weights_only=False)
            log.warning("SIGTERM: saved %s; continue with ckpt_path=%s", self.path, self.path)

"""Exact resumption: RNG state in checkpoints, and a checkpoint when the job is told to stop.

Lightning restores weights, optimiser, scheduler and loop progress; without the RNG state the
resumed run draws different crops and augmentations and diverges from an uninterrupted one.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class RNGState(L.Callback):
    """Saves and restores Python, NumPy, torch (and CUDA) random states with each checkpoint."""

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


class CheckpointOnSignal(L.Callback):
    """On SIGTERM (pre-emption, ``scancel``, ``kill``) save ``last.ckpt`` before Lightning exits."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "checkpoints" / "last.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
            log.warning("SIGTERM: saved %s; continue with ckpt_path=%s", self.path, self.path)

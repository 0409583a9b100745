"""Stop a run as soon as a loss term stops being finite, and say which term."""

from __future__ import annotations

import lightning as L
import torch

from featlab.errors import NonFiniteLossError
from featlab.interface import ReportsLossTerms

__all__ = ["NaNGuard", "NonFiniteLossError"]


class NaNGuard(L.Callback):
    """Checks ``pl_module.loss_terms`` every ``every_n_steps`` training steps.

    All terms are stacked and checked with a single device->host sync, so the guard costs one
    ``.item()`` per check rather than one per term per step.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = max(1, every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        terms = pl_module.loss_terms if isinstance(pl_module, ReportsLossTerms) else {}
        if not terms or trainer.global_step % self.every_n_steps:
            return
        stacked = torch.stack([v.float().reshape(()) for v in terms.values()])
        if bool(torch.isfinite(stacked).all()):
            return
        bad = [name for name, v in terms.items() if not bool(torch.isfinite(v).all()) and name != "total"]
        culprit = ", ".join(bad) or "total"
        raise NonFiniteLossError(
            f"loss term '{culprit}' became non-finite at step {trainer.global_step}; "
            "lower task.optim.lr, set trainer.gradient_clip_val, or check the data (NaN/inf pixels)"
        )

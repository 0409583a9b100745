"""FeatlabTask's optimiser wiring under a real Lightning fit: ``_target_`` optimisers and schedulers
(torch and timm) beside the short-name presets."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from featlab.tasks.base import FeatlabTask


class Regression(FeatlabTask):
    def __init__(self, **common) -> None:
        super().__init__(**common)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return nn.functional.mse_loss(self.net(x), y)


def _fit(optim: dict, scheduler: dict, epochs: int = 2) -> Regression:
    torch.manual_seed(0)
    task = Regression(optim=optim, scheduler=scheduler)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=4)  # 4 steps per epoch
    L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(task, data)
    return task


PRESET_OPTIM = {"name": "adamw", "lr": 1.0, "weight_decay": 0.0, "betas": [0.9, 0.99]}


def test_timm_scheduler_steps_per_optimiser_step_in_a_fit():
    optim = {"name": "adamw", "lr": 1.0, "_target_": "torch.optim.SGD", "_partial_": True}  # _target_ wins over name
    task = _fit(optim, {"_target_": "timm.scheduler.CosineLRScheduler", "_partial_": True, "warmup_t": 2})
    assert type(task.trainer.optimizers[0]) is torch.optim.SGD
    assert task.lrs[:3] == pytest.approx([0.0, 0.5, 1.0 * 0.5 * (1 + torch.cos(torch.tensor(2 / 8 * torch.pi)).item())])
    assert task.lrs[-1] < 0.05  # t_initial = the fit's 8 steps


def test_torch_scheduler_per_epoch_and_the_preset_still_work():
    task = _fit(PRESET_OPTIM, {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.1,
                               "interval": "epoch"})
    assert task.lrs == pytest.approx([1.0] * 4 + [0.1] * 4)
    preset = _fit(PRESET_OPTIM, {"kind": "step", "milestones": [0.5], "gamma": 0.1})
    assert preset.lrs == pytest.approx([1.0] * 4 + [0.1] * 4) and type(preset.trainer.optimizers[0]) is torch.optim.AdamW

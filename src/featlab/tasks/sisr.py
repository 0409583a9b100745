"""Single-image super-resolution with pixel + perceptual losses.

Method: an SR network maps LR -> SR; the loss is a weighted sum of a pixel term, a perceptual
term (distances between frozen-backbone features of SR and HR at chosen layers) and optionally
TV. Evaluation follows the standard SR protocol: PSNR/SSIM on the Y channel with ``scale``
border pixels cropped, per benchmark folder, with bicubic upscaling measured beside the network.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from featlab.losses.composite import CompositeLoss
from featlab.metrics.sr import SRMetrics
from featlab.nets.published import build_net
from featlab.tasks.base import FeatlabTask
from featlab.visualize import grid_from_columns


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The baseline every SR result is compared against."""
    if scale == 1:
        return lr
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


class SISRTask(FeatlabTask):
    def __init__(
        self,
        net: Mapping,
        loss: Mapping,
        scale: int,
        optim: Mapping | None = None,
        scheduler: Mapping | None = None,
        channels_last: bool = True,
        monitor: Mapping | None = None,
        preview_rows: int = 2,
    ) -> None:
        super().__init__(optim=optim, scheduler=scheduler, channels_last=channels_last, monitor=monitor)
        self.save_hyperparameters()
        self.scale = int(scale)
        self.net: nn.Module = build_net(net)  # net.weights: start from a published file
        self.loss = CompositeLoss.from_config(loss)
        self.preview_rows = preview_rows
        self.eval_metrics = nn.ModuleDict()  # "<stage>/<benchmark>/<sr|bicubic>" -> SRMetrics
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    # -- the method ---------------------------------------------------------------------------
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if self.use_channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        return self.net(lr)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        lr, hr = self.degraded_pair(batch)
        sr = self(lr)
        total, terms = self.loss(sr, hr)
        self.log_loss_terms("train", total, terms, batch_size=lr.shape[0])
        return total

    def degraded_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(LR, HR); a DataModule that degrades on the device provides HR only and a ``degrade``."""
        if "lr" in batch:
            return batch["lr"], batch["hr"]
        return self.trainer.datamodule.degrade(batch["hr"]), batch["hr"]

    def synthetic_batch(self, batch_size: int, device: torch.device, lr_size: int = 64) -> dict:
        """Random LR/HR pairs of training shape, for the bench tool."""
        hr_size = lr_size * self.scale
        return {"lr": torch.rand(batch_size, 3, lr_size, lr_size, device=device),
                "hr": torch.rand(batch_size, 3, hr_size, hr_size, device=device)}

    def compile_networks(self) -> None:
        self.net.compile()  # in place: parameter names, checkpoints and the tools stay unchanged

    # -- evaluation ---------------------------------------------------------------------------
    def _benchmark_names(self, stage: str) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None)
        names = getattr(dm, f"{stage}_names", None) if dm is not None else None
        return list(names or ["val"])

    def _metrics(self, stage: str, name: str, kind: str) -> SRMetrics:
        key = f"{stage}/{name}/{kind}"
        if key not in self.eval_metrics:
            self.eval_metrics[key] = SRMetrics(crop_border=self.scale).to(self.device)
        return self.eval_metrics[key]  # type: ignore[return-value]

    def _eval_step(self, stage: str, batch: dict, dataloader_idx: int) -> None:
        lr, hr = self.degraded_pair(batch)
        sr = self(lr).clamp(0, 1).float()
        name = self._benchmark_names(stage)[dataloader_idx]
        self._metrics(stage, name, "sr").update(sr, hr.float())
        self._metrics(stage, name, "bicubic").update(bicubic_upscale(lr.float(), self.scale), hr.float())
        if stage == "val" and dataloader_idx == 0:
            _, terms = self.loss(sr, hr)
            self.log("val/loss", sum(terms.values()), batch_size=lr.shape[0], add_dataloader_idx=False)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _log_epoch(self, stage: str) -> None:
        """Per-benchmark PSNR/SSIM for SR and bicubic, and their mean over benchmarks (monitored)."""
        means: dict[str, list[torch.Tensor]] = {}
        for key in list(self.eval_metrics.keys()):
            key_stage, name, kind = key.split("/")
            if key_stage != stage:
                continue
            values = self.eval_metrics[key].compute()
            self.eval_metrics[key].reset()
            suffix = "" if kind == "sr" else "_bicubic"
            for metric, value in values.items():
                self.log(f"{stage}/{name}/{metric}{suffix}", value, add_dataloader_idx=False)
                means.setdefault(f"{stage}/{metric}{suffix}", []).append(value)
        for key, values in means.items():
            self.log(key, torch.stack(values).mean(), prog_bar=key.endswith("psnr"), add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def preview(self, batch: dict) -> torch.Tensor:
        """LR | bicubic | SR | HR for the first images of the first validation batch."""
        lr, hr = self.degraded_pair(batch)
        lr, hr = lr[: self.preview_rows], hr[: self.preview_rows]
        sr = self(lr).clamp(0, 1)
        return grid_from_columns({"lr": lr, "bicubic": bicubic_upscale(lr, self.scale), "sr": sr, "hr": hr})


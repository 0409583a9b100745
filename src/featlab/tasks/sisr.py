"""Single-image super-resolution with pixel + perceptual losses.

Method: an SR network maps LR -> SR; the loss is a weighted sum of a pixel term, a perceptual
term (distances between frozen-backbone features of SR and HR at chosen layers) and optionally
TV. Evaluation follows the standard SR protocol: PSNR/SSIM (and MS-SSIM, see ``metrics.sr``) on
the Y channel with ``scale`` border pixels cropped, per benchmark folder, with bicubic upscaling
measured beside the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from featlab.interface import eval_set_names
from featlab.metrics.sr import SRMetrics
from featlab.tasks.restoration import RestorationTask


class SISRTask(RestorationTask):
    def __init__(self, net: Mapping, loss: Mapping, scale: int, preview_rows: int = 2, **common: Any) -> None:
        """``common``: the base task's ``optim``, ``scheduler``, ``channels_last`` (default true), ``monitor``."""
        super().__init__(preview_rows=preview_rows, **common)
        self.save_hyperparameters()
        self.scale = int(scale)
        self.build_restoration(net, loss)
        self.eval_metrics = nn.ModuleDict()  # "<stage>/<benchmark>/<sr|bicubic>" -> SRMetrics

    def synthetic_batch(self, batch_size: int, device: torch.device, lr_size: int = 64) -> dict:
        """Random LR/HR pairs of training shape, for the bench tool."""
        hr_size = lr_size * self.scale
        return {"lr": torch.rand(batch_size, 3, lr_size, lr_size, device=device),
                "hr": torch.rand(batch_size, 3, hr_size, hr_size, device=device)}

    # -- evaluation ---------------------------------------------------------------------------
    def _benchmark_names(self, stage: str) -> list[str]:
        return eval_set_names(getattr(self.trainer, "datamodule", None), stage, default=["val"])

    def _metrics(self, stage: str, name: str, kind: str) -> SRMetrics:
        key = f"{stage}/{name}/{kind}"
        if key not in self.eval_metrics:
            self.eval_metrics[key] = self.sr_metrics(crop_border=self.scale).to(self.device)
        return self.eval_metrics[key]  # type: ignore[return-value]

    def _eval_step(self, stage: str, batch: dict, dataloader_idx: int) -> None:
        lr, hr = self.degraded_pair(batch)
        sr = self.restore(lr)
        name = self._benchmark_names(stage)[dataloader_idx]
        self._metrics(stage, name, "sr").update(sr, hr.float())
        self._metrics(stage, name, "bicubic").update(self.bicubic(lr, hr.shape[-2:]), hr.float())
        if stage == "val" and dataloader_idx == 0:
            _, terms = self.loss(sr, hr)
            self.log("val/loss", sum(terms.values()), batch_size=lr.shape[0], add_dataloader_idx=False)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _log_epoch(self, stage: str) -> None:
        """Per-benchmark PSNR/SSIM/MS-SSIM for SR and bicubic, and their mean over benchmarks (monitored)."""
        means: dict[str, list[torch.Tensor]] = {}
        for key in list(self.eval_metrics.keys()):
            key_stage, name, kind = key.split("/")
            if key_stage != stage:
                continue
            values = self.eval_metrics[key].compute()
            self.eval_metrics[key].reset()
            suffix = "" if kind == "sr" else "_bicubic"
            for metric, value in values.items():
                if metric == "ms_ssim_scales" and kind != "sr":
                    continue  # the same images as the SR row: the same count
                self.log(f"{stage}/{name}/{metric}{suffix}", value, add_dataloader_idx=False)
                means.setdefault(f"{stage}/{metric}{suffix}", []).append(value)
        for key, values in means.items():
            # scale counts: the fewest any benchmark used, so a mixed mean is never mistaken for 5 scales
            value = torch.stack(values).min() if key.endswith("ms_ssim_scales") else torch.stack(values).mean()
            self.log(key, value, prog_bar=key.endswith("psnr"), add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

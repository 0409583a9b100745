"""What SISR and face DSR share: a network that restores a degraded image, trained on a weighted loss.

Method: a network maps the low-resolution (and possibly blurred, noisy, compressed) image LR to
its high-resolution original HR; the loss is a weighted sum of named terms (pixel, perceptual,
identity, TV: :class:`featlab.losses.composite.CompositeLoss`). Every result is compared with
bicubic upscaling of the same LR. LR comes with the batch; a DataModule that degrades on the
device adds it in ``on_after_batch_transfer`` (:class:`featlab.data.degradations.DegradingDataModule`).
The subclasses differ only in how they evaluate: SR benchmarks (SISR) or face recognition (DSR).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from featlab.data.resize import bicubic_upscale
from featlab.errors import ConfigError
from featlab.interface import DegradesOnDevice
from featlab.losses.composite import CompositeLoss
from featlab.metrics.feature_distance import build_feature_distance
from featlab.metrics.lpips import build_lpips
from featlab.metrics.sr import SRMetrics
from featlab.nets.published import build_net
from featlab.tasks.base import FeatlabTask
from featlab.visualize import grid_from_columns


class RestorationTask(FeatlabTask):
    """LR -> HR with ``self.net`` and ``self.loss``; subclasses call :meth:`build_restoration`.

    ``scale`` is the upscaling factor; 0 means "read it from the image sizes" (see :meth:`bicubic`).
    """

    net: nn.Module
    loss: CompositeLoss

    def __init__(self, *, channels_last: bool = True, preview_rows: int = 2, eval_lpips: Mapping | None = None,
                 eval_feature_distance: Mapping | None = None, **common: Any) -> None:
        """``eval_lpips``: ``{net, backbone_weights}`` for LPIPS beside PSNR/SSIM/MS-SSIM when its
        weights are on disk (skipped with one log line otherwise, never downloaded); null: off.
        ``eval_feature_distance``: PerceptualLoss keys for a fixed frozen-feature distance logged as
        ``feature_distance`` (:mod:`featlab.metrics.feature_distance`), one criterion for runs
        trained on different losses; null: off."""
        super().__init__(channels_last=channels_last, **common)
        self.preview_rows = preview_rows
        self.scale = 0
        scorer = build_lpips(**eval_lpips) if eval_lpips else None
        # held in a tuple and a dict: not submodules, never checkpointed
        self._lpips = (scorer,) if scorer is not None else ()
        features = build_feature_distance(eval_feature_distance)
        self._scorers = {"feature_distance": features} if features is not None else {}

    def sr_metrics(self, crop_border: int) -> SRMetrics:
        """PSNR/SSIM/MS-SSIM (+ LPIPS, feature distance when set) of one benchmark, with this task's scorers."""
        return SRMetrics(crop_border=crop_border, lpips=self._lpips[0] if self._lpips else None,
                         scorers=self._scorers)

    def build_restoration(self, net: Mapping, loss: Mapping) -> None:
        """The network (in channels_last memory when the task runs so) and the weighted loss.

        ``net.weights`` names a published file or featlab checkpoint to start from
        (:func:`featlab.nets.published.build_net`).
        """
        self.net = build_net(net)
        self.loss = CompositeLoss.from_config(loss)
        if self.use_channels_last:
            self.net.to(memory_format=torch.channels_last)

    # -- the method ---------------------------------------------------------------------------
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if self.use_channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        return self.net(lr)

    def degraded_pair(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(LR, HR): LR from the batch, else made by the DataModule's ``degrade``."""
        if "lr" in batch:
            return batch["lr"], batch["hr"]
        datamodule = getattr(self.trainer, "datamodule", None)
        if not isinstance(datamodule, DegradesOnDevice):
            raise ConfigError("data", f"batches of {type(datamodule).__name__} hold HR only and it cannot degrade "
                                      "them; use a DataModule with a degradation (data=sr_embedded, faces_synthetic)")
        return datamodule.degrade(batch["hr"]), batch["hr"]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        lr, hr = self.degraded_pair(batch)
        sr = self(lr)
        total, terms = self.loss(sr, hr)
        self.log_loss_terms("train", total, terms, batch_size=lr.shape[0])
        return total

    def restore(self, lr: torch.Tensor) -> torch.Tensor:
        """The network's output as an image: float, clamped to [0, 1] (what metrics and grids see)."""
        return self(lr).float().clamp(0.0, 1.0)

    def bicubic(self, lr: torch.Tensor, hr_size: tuple[int, int]) -> torch.Tensor:
        """The baseline every result is compared against: MATLAB ``imresize`` bicubic upscaling (the
        protocol of published SR tables, :mod:`featlab.data.resize`), clamped to [0, 1]."""
        scale = self.scale or hr_size[0] // lr.shape[-2]
        return bicubic_upscale(lr.float(), scale)

    def compile_networks(self) -> None:
        self.net.compile()  # in place: parameter names, checkpoints and the tools stay unchanged

    def preview(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """LR | bicubic | restored | HR for the first images of the first validation batch."""
        lr, hr = self.degraded_pair(batch)
        lr, hr = lr[: self.preview_rows], hr[: self.preview_rows]
        return grid_from_columns({"lr": lr, "bicubic": self.bicubic(lr, hr.shape[-2:]), "sr": self.restore(lr),
                                  "hr": hr})

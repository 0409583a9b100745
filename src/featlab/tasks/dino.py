"""DINO: self-distillation with no labels (Caron et al., 2021).

Method: a student (backbone + projection head) sees all crops of an image, 2 global and N local;
a teacher of the same architecture sees only the global crops. The student is trained to match
the teacher's centred, sharpened prototype distribution of every *other* view (``DINOLoss``);
the teacher is never trained: it is an exponential moving average of the student, its momentum
following a cosine from 0.996 to 1. Learning rate (linear warmup, then cosine; scaled by
global batch / 256) and weight decay (cosine 0.04 -> 0.4, only on weights) change every step;
gradients are clipped per parameter; the head's last layer is frozen for the first epoch(s).
Evaluation is a kNN classifier on the teacher backbone's features (``callbacks/knn.py``); the
teacher backbone is exported so any other task can load it through ``featlab.backbones.create``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from featlab.backbones import FeatureExtractor, save_backbone
from featlab.config import build, to_plain
from featlab.data.multicrop import MultiCrop, to_float_crops
from featlab.errors import ConfigError, require
from featlab.losses.dino import DINOLoss, collapse_flag
from featlab.nets.dino_model import DINOModel, clip_grad_per_parameter_, ema_update_
from featlab.optim import cosine_value
from featlab.tasks.base import FeatlabTask

log = logging.getLogger(__name__)

BENCH_INPUTS = ("images", "crops")


class SchedulePosition(NamedTuple):
    """Where a fit is: optimiser step, total optimiser steps, and optimiser steps per epoch."""

    step: int
    total: int
    per_epoch: float


class DINOTask(FeatlabTask):
    def __init__(
        self,
        net: Mapping,
        loss: Mapping,
        multicrop: Mapping,
        momentum_teacher: float = 0.996,
        momentum_teacher_end: float = 1.0,
        weight_decay_end: float = 0.4,
        clip_grad: float = 3.0,
        freeze_last_layer: int = 1,
        lr_reference_batch: int = 256,
        collapse_margin: float = 0.05,
        export_teacher: bool = True,
        bench_input: str = "crops",
        **common: Any,
    ) -> None:
        """``common``: the base task's ``optim``, ``scheduler``, ``channels_last``, ``monitor``."""
        super().__init__(**common)
        self.save_hyperparameters()
        require(0.0 <= momentum_teacher <= momentum_teacher_end <= 1.0, "task.momentum_teacher",
                f"need 0 <= momentum_teacher ({momentum_teacher}) <= momentum_teacher_end ({momentum_teacher_end}) <= 1")
        require(bench_input in BENCH_INPUTS, "task.bench_input", f"must be one of {BENCH_INPUTS}, got {bench_input!r}")
        self.multicrop = MultiCrop(**to_plain(multicrop))
        self.student: DINOModel = build(net, channels_last=self.use_channels_last)
        # the teacher starts as an exact copy; no drop-path (it only ever provides targets)
        self.teacher: DINOModel = build(net, channels_last=self.use_channels_last, drop_path_rate=0.0)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self._check_crops_fit_backbone()
        loss_cfg = dict(to_plain(loss))
        out_dim = self.student.head.out_dim
        require(loss_cfg.pop("out_dim", out_dim) == out_dim, "loss.out_dim",
                f"must equal net.out_dim ({out_dim}); leave it unset, the task fills it in")
        self.loss: DINOLoss = build(loss_cfg, out_dim=out_dim, ncrops=self.multicrop.ncrops)
        self.momentum_teacher = momentum_teacher
        self.momentum_teacher_end = momentum_teacher_end
        self.weight_decay_start = float(self.optim_cfg.get("weight_decay", 0.04))
        self.weight_decay_end = weight_decay_end
        self.clip_grad = clip_grad
        self.freeze_last_layer = freeze_last_layer
        self.lr_reference_batch = lr_reference_batch
        self.collapse_margin = collapse_margin
        self.export_teacher = export_teacher
        self.bench_input = bench_input
        self.exported_path: Path | None = None
        self._schedule_lengths: tuple[int, int] | None = None  # (total, per epoch), once per fit

    def _check_crops_fit_backbone(self) -> None:
        patch = self.student.backbone.patch_size
        for key, size in (("global_crops_size", self.multicrop.global_view.size),
                          ("local_crops_size", self.multicrop.local_view.size)):
            if patch and size % patch:
                raise ConfigError(f"data.multicrop.{key}",
                                  f"{size} px is not a multiple of {self.student.backbone.name}'s patch size {patch}")

    # -- the method -------------------------------------------------------------------------------
    def crops_of(self, batch: Mapping[str, Any]) -> list[torch.Tensor]:
        """Float crops on the device: made here from uint8 images (GPU path) or converted (CPU path).

        The GPU multi-crop runs outside autocast so the augmentation itself stays in fp32.
        """
        if "images" in batch:
            with torch.autocast(self.device.type, enabled=False):
                return self.multicrop(batch["images"])
        return to_float_crops(batch["crops"])

    def dino_step(self, crops: Sequence[torch.Tensor], position: SchedulePosition | None = None,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student on all crops, teacher (no grad) on the two global crops, loss over other-view pairs."""
        n_global = self.multicrop.global_view.count
        with torch.no_grad():
            teacher_out = self.teacher(crops[:n_global])
        student_out = self.student(crops)
        step, _, steps_per_epoch = position or self.schedule_position()
        loss, stats = self.loss(student_out, teacher_out, progress_epochs=step / steps_per_epoch)
        stats["collapse_warning"] = collapse_flag(stats["teacher_entropy_ratio"], self.collapse_margin)
        return loss, stats

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        crops = self.crops_of(batch)
        loss, stats = self.dino_step(crops)
        batch_size = crops[0].shape[0]
        self.log_loss_terms("train", loss, {}, batch_size=batch_size)
        for name, value in stats.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/momentum", torch.full((), self.teacher_momentum(), device=self.device), on_step=True, on_epoch=False, batch_size=batch_size)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: the test number is the kNN accuracy ``KNNEval.on_test_epoch_end`` logs."""
        return None

    # -- schedules (per optimiser step) ------------------------------------------------------------
    def schedule_position(self) -> SchedulePosition:
        """Where the fit is, in optimiser steps, from the trainer (the start when there is none)."""
        if self._trainer is None:
            return SchedulePosition(0, 1, 1.0)
        if self._schedule_lengths is None:
            self._schedule_lengths = self.optimizer_steps()
        total, per_epoch = self._schedule_lengths
        return SchedulePosition(int(self._trainer.global_step), total, float(per_epoch))

    def teacher_momentum(self, position: SchedulePosition | None = None) -> float:
        step, total, _ = position or self.schedule_position()
        return cosine_value(step, total, self.momentum_teacher, self.momentum_teacher_end)

    def weight_decay_now(self, position: SchedulePosition | None = None) -> float:
        step, total, _ = position or self.schedule_position()
        return cosine_value(step, total, self.weight_decay_start, self.weight_decay_end)

    def apply_weight_decay(self, optimizer: torch.optim.Optimizer, position: SchedulePosition | None = None) -> None:
        """Cosine weight decay on the ``apply_wd`` groups only (biases and norms stay at 0)."""
        wd = self.weight_decay_now(position)
        for group in optimizer.param_groups:
            if group.get("apply_wd"):
                group["weight_decay"] = wd

    def scaled_lr(self) -> float:
        """DINO's linear scaling rule: base lr x images per optimiser step (all devices) / 256."""
        base = float(self.optim_cfg.get("lr", 5e-4))
        effective = self.effective_batch_size() if self._trainer is not None else None
        if not effective or not self.lr_reference_batch:
            return base
        return base * effective / self.lr_reference_batch

    def configure_model(self) -> None:
        """Under DDP, BatchNorm (ResNets, ``use_bn`` heads) must see the global batch, as in DINO.

        Runs before Lightning wraps the model, so student and teacher are both converted and keep
        their parameter names (the EMA pairing and the exported state dict are unchanged).
        """
        if self._trainer is not None and self.trainer.world_size > 1:
            self.student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.teacher = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)

    def on_train_start(self) -> None:
        super().on_train_start()
        self.log("train/lr_peak", self.scaled_lr(), on_step=False, on_epoch=True, rank_zero_only=True)

    def optimizer_config(self) -> dict[str, Any]:
        return {**self.optim_cfg, "lr": self.scaled_lr()}

    def scheduler_config(self) -> dict[str, Any]:
        schedule = dict(self.scheduler_cfg)
        if self.trainer.fast_dev_run:  # a one-step smoke run cannot hold a warmup of whole epochs
            schedule = {k: v for k, v in schedule.items() if not k.startswith("warmup")}
        return schedule

    def configure_optimizers(self):
        self._schedule_lengths = None  # a new fit: its lengths are read again from the trainer
        return super().configure_optimizers()

    # -- the optimiser step: wd schedule, last-layer freeze, clipping, EMA -------------------------------
    def on_after_backward(self) -> None:
        if self.current_epoch < self.freeze_last_layer:
            self.cancel_last_layer_gradients()

    def cancel_last_layer_gradients(self) -> None:
        """DINO holds the prototypes still at first: a random last layer moving early destabilises."""
        for param in self.student.head.last_layer_parameters():
            param.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val:  # the trainer's global-norm clipping, if someone asks for it explicitly
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        clip_grad_per_parameter_(list(self.student.parameters()), self.clip_grad)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        self.apply_weight_decay(optimizer)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.update_teacher()

    def update_teacher(self, position: SchedulePosition | None = None) -> None:
        ema_update_(self.teacher, self.student, self.teacher_momentum(position))

    # -- evaluation and export ----------------------------------------------------------------------
    def knn_backbone(self) -> FeatureExtractor:
        """What kNN evaluation and export use: the teacher's backbone (DINO's better network)."""
        return self.teacher.backbone

    def export_teacher_backbone(self, path: str | Path) -> Path:
        """A file ``featlab.backbones.create(name, checkpoint=path)`` loads as a regular backbone."""
        return save_backbone(self.teacher.backbone, path)

    def on_train_end(self) -> None:
        if not self.export_teacher or not self.trainer.is_global_zero or self.trainer.fast_dev_run:
            return
        self.exported_path = self.export_teacher_backbone(Path(self.trainer.default_root_dir) / "teacher_backbone.pt")
        log.info("teacher backbone exported to %s (load: featlab.backbones.create('%s', checkpoint=...))",
                 self.exported_path, self.teacher.backbone.name)

    def on_train_epoch_end(self) -> None:
        flag = self.trainer.callback_metrics.get("train/collapse_warning_epoch")
        if flag is not None and float(flag) > 0.5:
            ratio = float(self.trainer.callback_metrics.get("train/teacher_entropy_ratio_epoch", float("nan")))
            log.warning("DINO may be collapsing: teacher entropy is %.3f of log(out_dim); try a lower "
                        "loss.teacher_temp (0.02-0.04) or a larger net.out_dim", ratio)

    def extra_results(self) -> dict[str, Any]:
        return {"teacher_backbone": str(self.exported_path)} if self.exported_path else {}

    # -- benchmarking --------------------------------------------------------------------------------
    def images_in_batch(self, batch: Mapping[str, Any]) -> int:
        return int(batch["images"].shape[0] if "images" in batch else batch["crops"][0].shape[0])

    def synthetic_batch(self, batch_size: int, device: torch.device, image_size: int | None = None) -> dict:
        """Random training input: float crops (``bench_input=crops``, the training step alone) or
        uint8 images (``bench_input=images``, GPU multi-crop included)."""
        if self.bench_input == "images":
            side = image_size or self.multicrop.global_view.size * 8 // 7
            return {"images": torch.randint(0, 256, (batch_size, 3, side, side), dtype=torch.uint8, device=device)}
        return {"crops": [torch.rand(batch_size, 3, s, s, device=device) for s in self.multicrop.crop_sizes]}

    def bench_step(self, batch: Any, optimizer: torch.optim.Optimizer, step: int) -> torch.Tensor:
        """Everything a real step does: schedules, forward, loss (+ centre), backward, clip, update, EMA."""
        position = SchedulePosition(step, 1000, 100.0)  # a made-up fit: the bench has no trainer
        self.apply_weight_decay(optimizer, position)
        loss, _ = self.dino_step(self.crops_of(batch), position)
        loss.backward()
        clip_grad_per_parameter_(list(self.student.parameters()), self.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.update_teacher(position)
        return loss.detach()

    def compile_networks(self) -> None:
        """Compile student and teacher in place (``Module.compile``), so parameter names, the EMA
        pairing and exported state dicts are unchanged; one graph per crop resolution."""
        self.student.compile()
        self.teacher.compile()

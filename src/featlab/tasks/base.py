"""What every featlab LightningModule shares: optimiser/schedule wiring, loss logging, previews.

Tasks receive plain config dicts (Hydra instantiates them with ``_recursive_=False``) so that
``save_hyperparameters`` records exactly what rebuilds the model, and tools can reload a network
from a checkpoint without the frozen loss backbones.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from featlab.backbones.extractor import FeatureExtractor
from featlab.callbacks.throughput import batch_size_of
from featlab.checkpoints import make_loadable
from featlab.config import to_plain
from featlab.errors import ConfigError, require
from featlab.optim import (
    build_lr_lambda,
    build_optimizer,
    instantiate_optimizer,
    instantiate_scheduler,
    step_scheduler,
)

log = logging.getLogger(__name__)


def epochs_are_truncated(trainer: L.Trainer) -> bool:
    """Whether ``trainer.limit_train_batches`` cuts epochs short (a debugging knob: a count or a fraction < 1)."""
    limit = trainer.limit_train_batches
    return limit is not None and (isinstance(limit, int) or float(limit) < 1.0)


class FeatlabTask(L.LightningModule):
    """Base LightningModule; implements :class:`featlab.interface.Task` with working defaults.

    Subclasses call ``super().__init__(optim=..., scheduler=...)`` (or pass ``**common`` on), build
    their modules, and log their loss through :meth:`log_loss_terms`, which keeps the current terms
    in ``self.loss_terms`` so the NaN guard can name the culprit. Optional capabilities that
    callbacks and tools look for (kNN backbone, named evaluation sets, ...) are the Protocols of
    :mod:`featlab.interface`.
    """

    def __init__(
        self,
        optim: Mapping | None = None,
        scheduler: Mapping | None = None,
        channels_last: bool = False,
        monitor: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.optim_cfg = dict(to_plain(optim) or {"name": "adamw", "lr": 1e-4})
        self.scheduler_cfg = dict(to_plain(scheduler) or {"kind": "constant"})
        self.use_channels_last = channels_last
        self.monitor_cfg = dict(to_plain(monitor) or {})
        self.loss_terms: dict[str, torch.Tensor] = {}
        self.run_config: dict | None = None  # the full resolved run config, set by featlab.train

    # -- optimisation -------------------------------------------------------------------------
    def optimizer_parameters(self):
        """Named trainable parameters; frozen backbones have ``requires_grad=False`` and drop out."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def optimizer_steps(self) -> tuple[int, int]:
        """``(total, per_epoch)`` optimiser steps of this fit, for per-step schedules.

        Per epoch comes from the batches of one epoch and gradient accumulation, not from
        ``total / max_epochs``: with ``trainer.max_steps`` shorter than the epochs, that ratio would
        shrink every "epoch" of a warmup.
        """
        trainer = self.trainer
        total = trainer.estimated_stepping_batches  # also sets up the train loader
        require(math.isfinite(total), "trainer.max_epochs",
                "schedules need a length: set trainer.max_epochs or trainer.max_steps")
        batches = trainer.num_training_batches
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        if math.isfinite(batches):
            per_epoch = math.ceil(batches / accumulate)
        else:  # an iterable dataset of unknown length: spread the steps over the epochs
            per_epoch = int(total) // max(1, trainer.max_epochs or 1)
        return max(1, int(total)), max(1, per_epoch)

    def optimizer_config(self) -> dict[str, Any]:
        """The optimiser settings of this fit (a copy: ``task.optim`` itself never changes)."""
        return dict(self.optim_cfg)

    def scheduler_config(self) -> dict[str, Any]:
        """The schedule settings of this fit (a copy of ``task.scheduler``)."""
        return dict(self.scheduler_cfg)

    def configure_optimizers(self):
        opt_cfg = self.optimizer_config()
        if str(self.trainer.precision).startswith("16"):
            # fp16 loss scaling: a fused optimiser unscales inside its step, so Lightning would not
            # unscale before gradient clipping, and clipping would act on gradients x 65536
            opt_cfg["fused"] = False
        if "_target_" in opt_cfg:
            optimizer = instantiate_optimizer(self.optimizer_parameters(), opt_cfg)
        else:
            optimizer = build_optimizer(self.optimizer_parameters(), **opt_cfg)
        sched = self.scheduler_config()
        if "_target_" in sched:
            return {"optimizer": optimizer, "lr_scheduler": instantiate_scheduler(optimizer, sched, self.optimizer_steps)}
        kind = sched.pop("kind", "constant")
        if kind == "constant":
            return optimizer
        total, steps_per_epoch = self.optimizer_steps()
        warmup = int(sched.pop("warmup_steps", 0) or 0) + int(sched.pop("warmup_epochs", 0) or 0) * steps_per_epoch
        if warmup >= total and (self.trainer.fast_dev_run or epochs_are_truncated(self.trainer)):
            # A smoke test or a pipeline check (trainer=cpu: a few batches per epoch) has no real
            # epochs to warm up over; a full run with a warmup longer than itself stays an error.
            log.warning("warmup of %d steps does not fit in this %d-step check run: warming up over %d",
                        warmup, total, total // 2)
            warmup = total // 2
        milestones = [int(m * total) if m < 1 else int(m) for m in sched.pop("milestones", [])]
        factor = build_lr_lambda(kind, total, warmup, milestones=milestones, **sched)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """timm schedulers are not torch ``LRScheduler``s: they step by count (see ``optim.step_scheduler``)."""
        step_scheduler(scheduler, self.current_epoch, self.global_step, metric)

    def effective_batch_size(self) -> int | None:
        """Images per optimiser step over all devices: per-device batch x world size x accumulation."""
        datamodule = getattr(self.trainer, "datamodule", None)
        batch = getattr(datamodule, "batch_size", None)
        if not batch:
            return None
        return int(batch) * self.trainer.world_size * max(1, int(self.trainer.accumulate_grad_batches))

    def on_train_start(self) -> None:
        """Log the effective batch size once, so runs on 1 and 8 GPUs can be told apart in W&B."""
        effective = self.effective_batch_size()
        if effective is not None:
            self.log("train/effective_batch_size", float(effective), on_step=False, on_epoch=True, rank_zero_only=True)

    # -- logging ------------------------------------------------------------------------------
    def log_loss_terms(self, stage: str, total: torch.Tensor, terms: Mapping[str, torch.Tensor],
                       batch_size: int) -> None:
        """Log the total and each weighted term; keep detached copies for the NaN guard."""
        on_step = stage == "train"
        self.log(f"{stage}/loss", total, prog_bar=True, on_step=on_step, on_epoch=True,
                 batch_size=batch_size, sync_dist=not on_step)
        for name, value in terms.items():
            self.log(f"{stage}/loss_{name}", value, on_step=on_step, on_epoch=True,
                     batch_size=batch_size, sync_dist=not on_step)
        if stage == "train":
            self.loss_terms = {"total": total.detach(), **{k: v.detach() for k, v in terms.items()}}

    # -- what callbacks and tools ask of every task (featlab.interface.Task) ---------------------
    def preview(self, batch: Any) -> torch.Tensor | None:
        """A (3, H, W) image in [0, 1] summarising the batch (image grids); None if the task has none."""
        return None

    def extra_results(self) -> dict[str, Any]:
        """Values beyond the logged metrics for ``results.json``; none by default."""
        return {}

    def images_in_batch(self, batch: Any) -> int:
        """Images in one training batch (throughput): by default the first tensor's length."""
        return batch_size_of(batch)

    def compile_networks(self) -> None:
        """``compile=true``: tasks compile their trainable networks in place; by default nothing is."""
        log.warning("compile=true: %s compiles nothing (no compile_networks of its own)", type(self).__name__)

    # -- checkpoints --------------------------------------------------------------------------
    def frozen_state_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of frozen backbones (perceptual/identity loss nets, slot encoders).

        Their weights come from the config (the hub cache or a named file) and never change, so
        checkpoints leave them out; the config rebuilds them. Learned statistics beside them (feature
        standardizers) and EMA teachers are not frozen extractors and stay in the checkpoint.
        """
        return tuple(f"{name}.model." for name, module in self.named_modules()
                     if isinstance(module, FeatureExtractor) and module.frozen)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints hold plain data only, so they load with ``torch.load(weights_only=True)``,
        and no frozen backbone weights (rebuilt from the config on load)."""
        make_loadable(checkpoint)
        frozen = self.frozen_state_prefixes()
        if frozen and "state_dict" in checkpoint:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(frozen)}
            checkpoint["featlab_rebuilt_from_config"] = list(frozen)
        if self.run_config is not None:
            checkpoint["featlab_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Frozen backbones left out of the file keep the weights this task was built with, and their
        module versions: an int8 recogniser's linears read their layout from them (``_metadata``)."""
        frozen = self.frozen_state_prefixes()
        state = checkpoint.get("state_dict")
        if frozen and isinstance(state, dict):
            own = self.state_dict()
            merged = OrderedDict(state)
            merged.update((key, value) for key, value in own.items() if key.startswith(frozen) and key not in state)
            metadata = OrderedDict(getattr(state, "_metadata", None) or {})
            for module, version in getattr(own, "_metadata", {}).items():
                if (module + ".").startswith(frozen):
                    metadata.setdefault(module, version)
            merged._metadata = metadata  # type: ignore[attr-defined]
            checkpoint["state_dict"] = merged

    # -- benchmarking -------------------------------------------------------------------------
    def synthetic_batch(self, batch_size: int, device: torch.device, **kwargs: Any) -> Any:
        """A random batch shaped like the training batches, for the bench tool."""
        raise ConfigError("experiment", f"{type(self).__name__} has no synthetic batches, so the bench tool "
                                        "cannot run it; choose an experiment of another task")

    def bench_step(self, batch: Any, optimizer: torch.optim.Optimizer, step: int) -> torch.Tensor:
        """One full training step outside the Trainer: forward, loss, backward, clipping, update.

        Tasks with extra per-step work (DINO's EMA teacher and schedules) override this so the
        benchmark measures everything a real step does.
        """
        loss = self.training_step(batch, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

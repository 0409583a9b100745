"""kNN (and optional linear-probe) evaluation of a task's frozen feature extractor during training.

The task names what to evaluate through ``knn_backbone()`` (DINO: the teacher's backbone); the
datamodule supplies the labelled ``knn_datasets()`` (bank, query). Under DDP each rank embeds a
disjoint strided shard, and the shards are gathered and put back in dataset order, so every rank
holds exactly the single-process features (no DistributedSampler padding duplicates) and
computes the same accuracy without further communication.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from featlab.errors import ConfigError, require
from featlab.interface import HasKNNBackbone, KNNDataModule
from featlab.metrics.knn import knn_accuracy, linear_probe_accuracy

log = logging.getLogger(__name__)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_in_order(values: torch.Tensor, indices: torch.Tensor, total: int) -> torch.Tensor:
    """Rows of ``values`` from every rank, placed at their dataset ``indices``; ``(total, ...)`` on every rank.

    Shards may differ in length by one, so each is padded to the longest before ``all_gather``
    and the padding (index -1) is dropped afterwards.
    """
    _, world = _world()
    if world == 1:
        out = values.new_empty((total, *values.shape[1:]))
        out[indices] = values
        return out
    longest = math.ceil(total / world)
    pad = longest - values.shape[0]
    values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
    indices = torch.cat([indices, indices.new_full((pad,), -1)])
    all_values = [torch.empty_like(values) for _ in range(world)]
    all_indices = [torch.empty_like(indices) for _ in range(world)]
    dist.all_gather(all_values, values.contiguous())
    dist.all_gather(all_indices, indices.contiguous())
    flat_values, flat_indices = torch.cat(all_values), torch.cat(all_indices)
    keep = flat_indices >= 0
    out = values.new_empty((total, *values.shape[1:]))
    out[flat_indices[keep]] = flat_values[keep]
    return out


@torch.no_grad()
def extract_features(
    embed: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, device: torch.device,
    batch_size: int = 64, num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D) float, labels (N,))`` of a labelled dataset, identical on every rank.

    ``dataset[i]`` is ``(image, label, ...)``; this rank embeds items ``rank, rank + world, ...``.
    """
    rank, world = _world()
    total = len(dataset)  # type: ignore[arg-type]
    shard = list(range(rank, total, world))
    # a private generator: iter() would otherwise draw from the global RNG that resumes restore
    loader = DataLoader(Subset(dataset, shard), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    feats, labels = [], []
    for batch in loader:
        images, targets = batch[0], batch[1]
        feats.append(embed(images.to(device, non_blocking=True)).float())
        labels.append(torch.as_tensor(targets, device=device))
    if feats:
        local_feats, local_labels = torch.cat(feats), torch.cat(labels).long()
    else:  # more ranks than items
        dim = embed(dataset[0][0][None].to(device)).shape[1]
        local_feats, local_labels = torch.empty(0, dim, device=device), torch.empty(0, dtype=torch.long, device=device)
    index = torch.tensor(shard, device=device, dtype=torch.long)
    return gather_in_order(local_feats, index, total), gather_in_order(local_labels, index, total)


def limited(dataset: Dataset, limit: int | float | None, batch_size: int) -> Dataset:
    """The evaluation share Lightning's ``limit_val/test_batches`` allows: ``limit`` batches (an int)
    or a fraction (a float), as an evenly strided subset so that every class stays represented."""
    total = len(dataset)  # type: ignore[arg-type]
    if limit is None or (isinstance(limit, float) and limit >= 1.0):
        return dataset
    keep = int(limit) * batch_size if isinstance(limit, int) else int(total * float(limit))
    if keep >= total:
        return dataset
    keep = max(keep, 1)
    return Subset(dataset, [int(i * total / keep) for i in range(keep)])


class KNNEval(L.Callback):
    """Weighted kNN accuracy (k, temperature, cosine) of ``pl_module.knn_backbone()`` every N epochs.

    Logs ``{prefix}/knn_top1`` and ``{prefix}/knn_top5`` (plus ``{prefix}/linear_top1`` with the
    probe) at the start of training (the initial backbone, also kept as ``knn_top1_init``), every
    ``every_n_epochs`` epochs and after the last epoch; ``test/knn_*`` in the test stage. Bank and
    query follow ``trainer.limit_val_batches`` / ``limit_test_batches`` like any evaluation
    (e.g. the ``trainer=cpu`` pipeline check embeds a few batches of each). ``knn_top1_chance``
    (1 / classes) is logged beside them: the level a study report must show the features beat.
    After each evaluation in training, ``knn_top1_gain`` = top-1 minus the initial top-1 of the
    same run: the paired effect of training, free of the seed-to-seed spread of the random init
    (0.09-0.18 between seeds on the embedded shapes) that a comparison of means would carry.
    """

    def __init__(self, every_n_epochs: int = 10, k: int = 20, temperature: float = 0.07,
                 batch_size: int | None = None, linear_probe: bool = False, probe_steps: int = 300,
                 at_start: bool = True, prefix: str = "val") -> None:
        require(every_n_epochs >= 1, "callbacks.knn.every_n_epochs", f"must be >= 1, got {every_n_epochs}")
        require(k >= 1, "callbacks.knn.k", f"must be >= 1, got {k}")
        require(temperature > 0, "callbacks.knn.temperature", f"must be positive, got {temperature}")
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.batch_size = batch_size
        self.linear_probe = linear_probe
        self.probe_steps = probe_steps
        self.at_start = at_start
        self.prefix = prefix
        self.history: list[dict[str, float]] = []
        self.initial_top1: float | None = None

    # -- the evaluation ---------------------------------------------------------------------------
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, KNNDataModule) or not isinstance(pl_module, HasKNNBackbone):
            raise ConfigError("callbacks.knn", f"kNN evaluation needs a datamodule with knn_datasets() and a task "
                              f"with knn_backbone(); got {type(datamodule).__name__} / {type(pl_module).__name__}. "
                              "Set callbacks.knn=null for this experiment")
        bank_set, query_set = datamodule.knn_datasets()
        limit = trainer.limit_test_batches if trainer.testing else trainer.limit_val_batches
        bank_set, query_set = (limited(d, limit, self.batch_size or getattr(datamodule, "eval_batch_size", 64))
                               for d in (bank_set, query_set))
        num_classes = int(datamodule.num_classes)
        require(num_classes >= 2, "data.knn_root", f"kNN evaluation needs at least 2 classes, got {num_classes}")
        backbone = pl_module.knn_backbone()
        was_training = backbone.training
        backbone.eval()
        batch_size = self.batch_size or getattr(datamodule, "eval_batch_size", 64)
        workers = getattr(datamodule, "num_workers", 0)
        try:
            with trainer.precision_plugin.forward_context():
                bank, bank_y = extract_features(backbone.global_features, bank_set, pl_module.device, batch_size, workers)
                query, query_y = extract_features(backbone.global_features, query_set, pl_module.device, batch_size,
                                                  workers)
        finally:
            backbone.train(was_training)
        acc = knn_accuracy(bank, bank_y, query, query_y, num_classes, self.k, self.temperature)
        metrics = {f"knn_{name}": value for name, value in acc.items()}
        metrics["knn_top1_chance"] = 1.0 / num_classes  # the baseline a study report draws
        if self.linear_probe:
            probe = linear_probe_accuracy(bank, bank_y, query, query_y, num_classes, steps=self.probe_steps)
            metrics.update({f"linear_{name}": value for name, value in probe.items()})
        return metrics

    def _log(self, pl_module: L.LightningModule, prefix: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            pl_module.log(f"{prefix}/{name}", value, on_step=False, on_epoch=True, sync_dist=False)

    # -- when it runs -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The kNN before training travels in checkpoints, so a resumed run's gain is still over its init."""
        return {"initial_top1": self.initial_top1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_top1 = state_dict.get("initial_top1")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.at_start:
            return
        if self.initial_top1 is not None:  # resumed: the init was measured before the interruption
            self._log(pl_module, self.prefix, {"knn_top1_init": self.initial_top1})
            return
        metrics = self.evaluate(trainer, pl_module)
        self.history.append({"epoch": -1, **metrics})
        self.initial_top1 = metrics["knn_top1"]
        self._log(pl_module, self.prefix, {**metrics, "knn_top1_init": metrics["knn_top1"]})
        log.info("kNN before training: top-1 %.4f", metrics["knn_top1"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not (last or trainer.fast_dev_run):
            return
        metrics = self.evaluate(trainer, pl_module)
        if self.initial_top1 is not None:
            metrics["knn_top1_gain"] = metrics["knn_top1"] - self.initial_top1
        self.history.append({"epoch": epoch, **metrics})
        self._log(pl_module, self.prefix, metrics)
        log.info("kNN after epoch %d: top-1 %.4f", epoch, metrics["knn_top1"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, "test", self.evaluate(trainer, pl_module))

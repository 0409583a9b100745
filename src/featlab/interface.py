"""The task interface: what callbacks and tools may ask of a task or a DataModule.

:class:`featlab.tasks.base.FeatlabTask` implements :class:`Task` with working defaults, so every
featlab task has all of it. The optional capabilities below are ``typing.Protocol``s: a task or
DataModule has one when it defines those methods, and callbacks and tools check with
``isinstance`` (they work with any LightningModule that provides them). This module sits in the
bottom layer (it imports nothing from featlab) so callbacks may use it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset


@runtime_checkable
class ReportsLossTerms(Protocol):
    """This step's weighted loss terms (the NaN guard names the one that broke)."""

    loss_terms: dict[str, torch.Tensor]


@runtime_checkable
class Previews(Protocol):
    def preview(self, batch: Any) -> torch.Tensor | None:
        """A (3, H, W) image in [0, 1] summarising a validation batch, or None (image grids)."""


@runtime_checkable
class HasExtraResults(Protocol):
    def extra_results(self) -> dict[str, Any]:
        """Values beyond the logged metrics for ``results.json``."""


@runtime_checkable
class CountsImages(Protocol):
    def images_in_batch(self, batch: Any) -> int:
        """Images one training batch holds (throughput)."""


@runtime_checkable
class Compilable(Protocol):
    def compile_networks(self) -> None:
        """``torch.compile`` the trainable networks in place (``compile=true``)."""


@runtime_checkable
class Task(ReportsLossTerms, Previews, HasExtraResults, CountsImages, Compilable, Protocol):
    """What every featlab task provides (``FeatlabTask`` implements all of it with defaults);
    callbacks ask for the one part they use, so they also serve other LightningModules."""


@runtime_checkable
class Benchmarkable(Protocol):
    """A task the bench tool can time outside the Trainer."""

    optim_cfg: dict[str, Any]

    def synthetic_batch(self, batch_size: int, device: torch.device, **kwargs: Any) -> Any: ...

    def bench_step(self, batch: Any, optimizer: torch.optim.Optimizer, step: int) -> torch.Tensor: ...

    def optimizer_parameters(self) -> Any: ...


class GlobalFeatures(Protocol):
    def global_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def train(self, mode: bool = True) -> Any: ...


@runtime_checkable
class HasKNNBackbone(Protocol):
    """A task whose backbone the kNN evaluation scores (DINO: the teacher's)."""

    def knn_backbone(self) -> GlobalFeatures: ...


@runtime_checkable
class KNNDataModule(Protocol):
    """A DataModule with a labelled bank and query split for kNN evaluation."""

    num_classes: int

    def knn_datasets(self) -> tuple[Dataset, Dataset]: ...


@runtime_checkable
class NamedEvalSets(Protocol):
    """A DataModule with one loader per named evaluation set (``val/set5/psnr``)."""

    @property
    def val_names(self) -> list[str]: ...

    @property
    def test_names(self) -> list[str]: ...


@runtime_checkable
class DegradesOnDevice(Protocol):
    """A DataModule that makes LR from HR on the device (restoration tasks ask it for LR)."""

    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


def eval_set_names(datamodule: Any, stage: str, default: list[str]) -> list[str]:
    """``val_names``/``test_names`` of a DataModule that has them, else ``default``."""
    if not isinstance(datamodule, NamedEvalSets):
        return list(default)
    names = datamodule.val_names if stage == "val" else datamodule.test_names
    return list(names or default)

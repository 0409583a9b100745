"""The DataModule base every task shares: seeded splits and one place for DataLoader settings."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from featlab.data.resumable import ResumableLoader
from featlab.errors import require


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split ``range(n)`` into consecutive chunks of a seeded permutation.

    The last chunk takes the rounding remainder, so every index lands in exactly one split and the
    split is the same on every rank and every rerun with the same seed.
    """
    require(abs(sum(fractions) - 1.0) < 1e-6, "data.split", f"fractions {list(fractions)} must sum to 1")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    splits, start = [], 0
    for i, frac in enumerate(fractions):
        stop = n if i == len(fractions) - 1 else start + round(frac * n)
        splits.append(order[start:stop])
        start = stop
    return splits


class BaseDataModule(L.LightningDataModule):
    """Holds loader settings (batch size, workers, pinning) so subclasses only build datasets.

    Subclasses take their own options and pass the rest on (``**loader``), so ``data.batch_size``,
    ``data.num_workers``, ``data.pin_memory``, ``data.persistent_workers``, ``data.seed`` and
    ``data.eval_batch_size`` are declared here once.
    """

    def __init__(
        self,
        batch_size: int = 16,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        require(batch_size > 0, "data.batch_size", f"must be positive, got {batch_size}")
        require(num_workers >= 0, "data.num_workers", f"must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed

    def make_loader(
        self, dataset: Dataset, train: bool, batch_size: int | None = None, collate_fn=None
    ) -> DataLoader:
        """A DataLoader with the module's settings; training loaders shuffle and drop the last batch.

        Every loader is a :class:`ResumableLoader`: an epoch's order and each sample's augmentation
        depend only on the seed, the epoch and the position, so a resumed run (mid-epoch included)
        trains on exactly the batches an uninterrupted one would.
        """
        workers = self.num_workers
        return ResumableLoader(
            dataset,
            batch_size=batch_size or (self.batch_size if train else self.eval_batch_size),
            shuffle=train,
            seed=self.seed,
            drop_last=train and len(dataset) > (batch_size or self.batch_size),  # type: ignore[arg-type]
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            collate_fn=collate_fn,
        )

"""Data loading that a pre-empted run can resume exactly, mid-epoch included.

Three things make a resumed run draw the same batches as an uninterrupted one:

* the order of an epoch is a function of ``(seed, epoch)`` only (:class:`ResumableSampler`), and a
  resumed epoch starts at the first batch not yet trained, skipping indices instead of decoding;
* each sample's augmentation randomness is a function of ``(seed, epoch, position)``
  (:class:`SeededSamples`): Python, NumPy and torch are seeded around ``dataset[i]``, so it does not
  matter which worker decodes a sample or how many it decoded before;
* loaders own a private generator, so creating an iterator never draws from the global torch RNG
  (PyTorch otherwise draws a worker base seed from it at every ``iter(loader)``), and the global
  stream that :class:`featlab.callbacks.resume.RNGState` saves stays aligned with training.

:class:`ResumableLoader` exposes ``state_dict``/``load_state_dict``, the interface Lightning's fit loop
saves in checkpoints and restores before iterating. The sampler subclasses ``DistributedSampler`` so
Lightning keeps it under DDP instead of wrapping it (it shards by rank itself).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A well-mixed 63-bit seed for one sample (splitmix64 of the three numbers)."""
    x = (seed * _MIX[0] + epoch * _MIX[1] + position * _MIX[2]) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * _MIX[1]) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableSampler(DistributedSampler):
    """Yields ``(index, sample seed)`` in an order fixed by ``(seed, epoch)``; can start mid-epoch.

    Shuffled or sequential, sharded over DDP ranks like ``DistributedSampler`` (padded so every
    rank gets the same count). ``start`` (in samples of this rank) skips what a resumed epoch has
    already trained on.
    """

    def __init__(self, length: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> None:
        # No super().__init__: it insists on an initialised process group; the rank is read at iter().
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self, world: int) -> int:
        if self.drop_last and self.length % world:
            return self.length // world
        return math.ceil(self.length / world)

    def __len__(self) -> int:
        return self._per_rank(_world()[1])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = _world()
        if self.shuffle:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        per_rank = self._per_rank(world)
        total = per_rank * world
        order = (order + order[: total - len(order)]) if total > len(order) else order[:total]
        mine = order[rank:total:world]
        for position in range(self.start, len(mine)):
            yield mine[position], sample_seed(self.seed, self.epoch, position * world + rank)


class SeededSamples(Dataset):
    """``dataset[index]`` computed under the per-sample seed, leaving the caller's RNG untouched."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int] | int) -> Any:
        if not isinstance(item, tuple):  # plain index (tools that read the dataset directly)
            return self.dataset[item]
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def __getattr__(self, name: str) -> Any:  # keep e.g. ``loader.dataset.images`` working
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableLoader(DataLoader):
    """A DataLoader over :class:`SeededSamples` + :class:`ResumableSampler` with a checkpointable position.

    ``batches_done`` counts the batches of the current epoch whose training step finished (advanced
    by :class:`featlab.callbacks.resume.RNGState`, not by fetching: Lightning prefetches ahead).
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, sampler: Sampler | None = None, **kwargs: Any) -> None:
        # Lightning's overfit_batches re-creates the loader with a SequentialSampler: the same first
        # batches every epoch, which the loader's own sampler gives unshuffled (resumable still).
        if sampler is not None and not isinstance(sampler, SequentialSampler):
            raise ValueError(f"ResumableLoader orders its samples itself; got a {type(sampler).__name__}")
        shuffle = shuffle and sampler is None
        sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=seed, drop_last=False)  # type: ignore[arg-type]
        kwargs.pop("generator", None)
        kwargs.pop("batch_sampler", None)  # None when Lightning re-creates the loader; the sampler batches here
        super().__init__(SeededSamples(dataset), batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                         generator=torch.Generator().manual_seed(seed), **kwargs)
        self.batches_done = 0
        self._resume: dict[str, int] | None = None

    def note_batch_done(self) -> None:
        self.batches_done += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches_done": int(self.batches_done)}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue where a checkpoint stopped, from the next ``iter()``'s first batch on."""
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self):  # saved at the end of an epoch: the next one starts from its beginning
            epoch, done = epoch + 1, 0
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        self._resume = {"epoch": epoch, "batches_done": done}

    def __iter__(self):
        """Lazy: the position is fixed at the first ``next()``, after Lightning has set the epoch
        (and restored a checkpoint, which may happen after it created the iterator)."""
        return _LazyIterator(self)

    def _start_iteration(self):
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == sampler.epoch:
            self.batches_done = resume["batches_done"]
        else:
            self.batches_done = 0
        sampler.start = self.batches_done * int(self.batch_size or 1)
        return super().__iter__()


class _LazyIterator:
    def __init__(self, loader: ResumableLoader) -> None:
        self.loader = loader
        self.iterator: Any = None

    def __iter__(self) -> _LazyIterator:
        return self

    def __next__(self) -> Any:
        if self.iterator is None:
            self.iterator = self.loader._start_iteration()
        return next(self.iterator)

    def __len__(self) -> int:
        return len(self.loader)

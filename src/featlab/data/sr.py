"""Super-resolution data: HR folders decoded once into memory, LR made on the fly by a Degradation.

SR training is usually bound by data loading (decoding 2K PNGs for one 128-pixel patch), so every
training image is decoded once in ``setup`` and patches are cut from memory; ``repeat`` draws
several patches per image per epoch because SR sets are small (DIV2K: 800 images; the embedded
default: 7 photos). Validation and test run on whole images, one per batch, with one dataloader
per benchmark folder so each is reported under its own name (``val/set5/psnr``).

Images smaller than ``hr_crop`` cannot give a training patch: they are skipped and reported in
one warning line (listed in ``too_small``); only when no image is large enough is that an error
naming ``data.hr_crop``. Unreadable files are skipped and counted the same way (``corrupt_reports``).

With ``gpu_degradation: true`` loader workers send HR patches only and the LR is made on the
training device after the transfer (:class:`DegradingDataModule`), so the task sees the same
batch either way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featlab.config import to_plain
from featlab.data.degradations import Degradation, DegradingDataModule
from featlab.data.images import CorruptFileReport, list_images, load_all_rgb
from featlab.data.samples import center_crop, sample_photos
from featlab.errors import ConfigError, require

log = logging.getLogger(__name__)

NamedImage = tuple[str, np.ndarray]
EMBEDDED_BENCHMARK = "samples"
# A benchmark image must leave SSIM's 11x11 window (featlab.metrics.sr) after the scale-pixel border
# shaved on each side; smaller ones would crash the first validation, after a whole epoch.
SSIM_WINDOW = 11


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float in [0, 1] (a copy: cached images are read-only)."""
    return torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Drop the bottom/right remainder so both sides divide by ``scale`` (the benchmark convention)."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def random_patch(image: np.ndarray, size: int) -> np.ndarray:
    """A random ``size`` x ``size`` patch under a random flip/rot90 (8 dihedral variants), global RNG."""
    h, w = image.shape[:2]
    top = int(torch.randint(0, h - size + 1, ()).item())
    left = int(torch.randint(0, w - size + 1, ()).item())
    patch = image[top:top + size, left:left + size]
    rotations, flip = torch.randint(0, 4, (2,)).tolist()
    patch = np.rot90(patch, k=rotations)
    return patch[:, ::-1] if flip % 2 else patch


class SRTrainDataset(Dataset):
    """Random HR patches cut from decoded images; ``repeat`` patches per image per epoch.

    Randomness comes from the global torch RNG, which Lightning seeds per loader worker, so
    workers never replay each other's crops. Without a degradation the sample is HR only.
    """

    def __init__(self, images: Sequence[NamedImage], hr_crop: int, repeat: int,
                 degradation: Degradation | None) -> None:
        self.images = list(images)
        self.hr_crop = hr_crop
        self.repeat = repeat
        self.degradation = degradation

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, image = self.images[index % len(self.images)]
        hr = image_to_tensor(random_patch(image, self.hr_crop))
        if self.degradation is None:
            return {"hr": hr, "name": name}
        return {"lr": self.degradation(hr[None])[0], "hr": hr, "name": name}


class SRBenchmarkDataset(Dataset):
    """Whole images (optionally centre-cropped to ``max_size``) with a reproducible LR per image."""

    def __init__(self, images: Sequence[NamedImage], degradation: Degradation, max_size: int | None,
                 seed: int) -> None:
        scale = degradation.scale
        self.images = [(name, modcrop(center_crop(image, max_size), scale)) for name, image in images]
        self.degradation = degradation
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, image = self.images[index]
        hr = image_to_tensor(image)
        # Seeded per image: the same LR every epoch, on every rank, whatever the loader order.
        generator = torch.Generator().manual_seed(self.seed * 100_003 + index)
        return {"lr": self.degradation(hr[None], generator=generator)[0], "hr": hr, "name": name}


def _dir_list(value: Any, key: str) -> list[str] | None:
    """``None`` | folder | [folders] -> list of folders."""
    value = to_plain(value)
    if value is None:
        return None
    folders = [value] if isinstance(value, (str, Path)) else list(value)
    require(len(folders) > 0, key, "is an empty list; give at least one folder or null for the embedded photos")
    return [str(f) for f in folders]


def _named_dirs(value: Any, key: str) -> dict[str, str] | None:
    """``None`` | folder | [folders] | {name: folder} -> {benchmark name: folder}."""
    value = to_plain(value)
    if value is None:
        return None
    if isinstance(value, Mapping):
        named = {str(k): str(v) for k, v in value.items()}
    else:
        folders = _dir_list(value, key) or []
        named = {Path(f).expanduser().resolve().name: f for f in folders}
        require(len(named) == len(folders), key, "two folders share a name; use {name: folder} to name them")
    require(len(named) > 0, key, "is empty; give {name: folder} or null for the embedded photos")
    return named


class _Folder(NamedTuple):
    """A listed image folder and the config key that named it (for error messages and reports)."""

    key: str
    root: str
    files: list[Path]


def _list_folder(key: str, root: str) -> _Folder:
    return _Folder(key, root, list_images(root, key))


class SRDataModule(DegradingDataModule):
    """HR folders (or the embedded photos) -> ``{"lr", "hr", "name"}`` batches for SR training.

    ``train_dirs``: HR folders (None: embedded photos). ``val_dirs``/``test_dirs``: ``{name:
    folder}`` benchmarks (None: the embedded val photos as ``samples``; test defaults to val).
    ``val_max_size`` centre-crops benchmark images for fast CPU validation; use null for numbers
    that compare with published tables. Training images live in memory (on every DDP rank).
    """

    def __init__(
        self,
        train_dirs: str | Sequence[str] | None = None,
        val_dirs: Mapping[str, str] | Sequence[str] | str | None = None,
        test_dirs: Mapping[str, str] | Sequence[str] | str | None = None,
        scale: int = 4,
        hr_crop: int = 128,
        degradation: Mapping[str, Any] | None = None,
        repeat: int = 16,
        val_max_size: int | None = 256,
        gpu_degradation: bool = False,
        **loader: Any,
    ) -> None:
        """``loader``: :class:`BaseDataModule`'s settings (batch size, workers, pinning, seed)."""
        require(loader.pop("eval_batch_size", None) in (None, 1), "data.eval_batch_size",
                "benchmark images differ in size, so SR evaluation runs one image per batch; use null or 1")
        super().__init__(eval_batch_size=1, **loader)
        require(isinstance(scale, int) and scale >= 1, "data.scale", f"must be an integer >= 1, got {scale}")
        require(hr_crop > 0, "data.hr_crop", f"must be positive, got {hr_crop}")
        if hr_crop % scale:
            lower, upper = hr_crop - hr_crop % scale, hr_crop - hr_crop % scale + scale
            raise ConfigError("data.hr_crop", f"{hr_crop} is not divisible by data.scale={scale}; "
                              f"use e.g. {lower or upper} or {upper} (or change data.scale)")
        require(repeat >= 1, "data.repeat", f"must be >= 1, got {repeat}")
        require(val_max_size is None or val_max_size >= scale, "data.val_max_size",
                f"must be null or >= data.scale ({scale}), got {val_max_size}")
        self.scale = scale
        self.hr_crop = hr_crop
        self.repeat = repeat
        self.val_max_size = val_max_size
        self.gpu_degradation = gpu_degradation
        self.degradation = Degradation.from_config(scale, degradation)

        self.train_dirs = _dir_list(train_dirs, "data.train_dirs")
        self.val_dirs = _named_dirs(val_dirs, "data.val_dirs")
        test_named = _named_dirs(test_dirs, "data.test_dirs")
        self.test_dirs = test_named if test_named is not None else self.val_dirs
        # Listing (not decoding) here makes a wrong path fail before any model is built.
        self._train_folders = [_list_folder(f"data.train_dirs[{i}]", d) for i, d in enumerate(self.train_dirs or [])]
        self._val_folders = {n: _list_folder(f"data.val_dirs.{n}", d) for n, d in (self.val_dirs or {}).items()}
        self._test_folders = self._val_folders if test_named is None else {
            n: _list_folder(f"data.test_dirs.{n}", d) for n, d in test_named.items()}

        self.corrupt_reports: dict[str, CorruptFileReport] = {}
        self.too_small: list[tuple[str, tuple[int, int]]] = []
        self.train_set: SRTrainDataset | None = None
        self.val_sets: dict[str, SRBenchmarkDataset] = {}
        self.test_sets: dict[str, SRBenchmarkDataset] = {}

    # -- names the task logs under --------------------------------------------------------------
    @property
    def val_names(self) -> list[str]:
        """Benchmark names in dataloader order: ``validation_step``'s ``dataloader_idx`` indexes this."""
        return list(self._val_folders) or [EMBEDDED_BENCHMARK]

    @property
    def test_names(self) -> list[str]:
        """Test benchmark names in dataloader order (defaults to the validation benchmarks)."""
        return list(self._test_folders) or [EMBEDDED_BENCHMARK]

    @property
    def num_skipped(self) -> int:
        """Unreadable files skipped so far, over every folder."""
        return sum(len(r.skipped) for r in self.corrupt_reports.values())

    # -- loading ------------------------------------------------------------------------------
    def _decode(self, folder: _Folder) -> list[NamedImage]:
        """Decode a folder once; every file unreadable is a config error, some unreadable a warning."""
        report = self.corrupt_reports.setdefault(folder.key, CorruptFileReport(folder.key))
        images = load_all_rgb(folder.files, report)
        require(len(images) > 0, folder.key,
                f"none of the {len(folder.files)} image file(s) in '{folder.root}' could be decoded")
        base = Path(folder.root).expanduser()
        return [(str(path.relative_to(base).with_suffix("")), image) for path, image in images]

    def _benchmark_sets(self, folders: dict[str, _Folder]) -> dict[str, SRBenchmarkDataset]:
        """One dataset per benchmark folder; no folders means the embedded val photos."""
        if folders:
            benchmarks = {name: self._decode(folder) for name, folder in folders.items()}
        else:
            benchmarks = {EMBEDDED_BENCHMARK: list(sample_photos("val").items())}
        sets = {name: SRBenchmarkDataset(images, self.degradation, self.val_max_size, self.seed)
                for name, images in benchmarks.items()}
        need = SSIM_WINDOW + 2 * self.scale
        for name, dataset in sets.items():
            for image_name, image in dataset.images:
                if min(image.shape[:2]) < need:
                    key = folders[name].key if name in folders else "data.val_dirs"
                    raise ConfigError(key, f"benchmark image '{image_name}' is {image.shape[1]}x{image.shape[0]} "
                                           f"(after cropping); PSNR/SSIM at x{self.scale} need at least {need} "
                                           "pixels per side: remove it or raise data.val_max_size")
        return sets

    def _large_enough(self, images: list[NamedImage]) -> list[NamedImage]:
        """Drop images smaller than the crop (reported once); none left is an error naming hr_crop."""
        kept = [(n, im) for n, im in images if min(im.shape[:2]) >= self.hr_crop]
        self.too_small = [(n, im.shape[:2]) for n, im in images if min(im.shape[:2]) < self.hr_crop]
        if self.too_small:
            name, (h, w) = self.too_small[0]
            log.warning("data.hr_crop: skipping %d training image(s) smaller than the %d-pixel crop, e.g. "
                        "'%s' (%dx%d)", len(self.too_small), self.hr_crop, name, h, w)
        if not kept:
            name, (h, w) = max(self.too_small, key=lambda item: min(item[1]))
            raise ConfigError("data.hr_crop", f"{self.hr_crop} is larger than every training image (largest: "
                              f"'{name}', {h}x{w}); lower data.hr_crop")
        return kept

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            if self._train_folders:
                images = [item for folder in self._train_folders for item in self._decode(folder)]
            else:
                images = list(sample_photos("train").items())
            worker_degradation = None if self.gpu_degradation else self.degradation
            self.train_set = SRTrainDataset(self._large_enough(images), self.hr_crop, self.repeat,
                                            worker_degradation)
        if stage in (None, "fit", "validate") and not self.val_sets:
            self.val_sets = self._benchmark_sets(self._val_folders)
        if stage in (None, "test") and not self.test_sets:
            shares_val = self._test_folders is self._val_folders and self.val_sets
            self.test_sets = self.val_sets if shares_val else self._benchmark_sets(self._test_folders)

    # -- loaders ------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.train_set, train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.make_loader(self.val_sets[name], train=False, batch_size=1) for name in self.val_names]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.make_loader(self.test_sets[name], train=False, batch_size=1) for name in self.test_names]

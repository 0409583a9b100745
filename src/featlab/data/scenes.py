"""Multi-object scenes with instance masks for the slot-attention task.

Sources (``data.source``):

- ``embedded`` (default): 2D scenes rendered on the fly from seeds (:mod:`featlab.data.render2d`);
  no files, no download, identical on every machine.
- ``render3d``: MOVi-A-like 3D scenes from pybullet (:mod:`featlab.data.render3d`, optional extra).
- ``folder``: scenes on disk, laid out as::

      root/images/<name>.png|jpg    RGB image
      root/masks/<name>.png|npy     instance ids, same height/width as the image, 0 = background

  (PNG masks may be 8/16-bit greyscale or palette PNGs, whose indices are the ids, as Kubric
  writes them). If ``root/train`` exists, ``root/train``, ``root/val`` (or ``validation``) and
  ``root/test`` each hold that layout and are used as the splits; otherwise one folder is split by
  ``data.split`` with ``data.seed``. ``featlab.tools.movi_convert`` writes this layout from MOVi
  exports. Masks are needed for evaluation only: ``data.require_masks=false`` trains and reports
  losses on a folder without them.

Images and masks are resized to ``image_size`` squared (bilinear with antialiasing for images,
nearest for masks, so ids stay ids). Every item is ``{"image": (3,H,W) float in [0,1],
"mask": (H,W) long, "index": int, "split": int}``; ``split`` and ``index`` identify the item so a
task can cache features of a frozen backbone.

The test stage also returns the training split without shuffling (``test_names[1] ==
"eval_train"``) so the final model's training loss, and hence the generalisation gap, is measured
under exactly the same conditions as the test loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from featlab.data.base import BaseDataModule, seeded_split
from featlab.data.images import (
    IMAGE_EXTENSIONS,
    CorruptFileReport,
    list_images,
    load_rgb,
    readable,
    resolve_folder,
)
from featlab.data.render2d import render_scene
from featlab.errors import ConfigError, require, unknown_name

log = logging.getLogger(__name__)

SOURCES = ("embedded", "render3d", "folder")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Seed offsets keep the generated splits disjoint and independent of each other's sizes.
SPLIT_SEED_OFFSETS = {"train": 0, "val": 10_000_000, "test": 20_000_000}


def to_item(image: np.ndarray, mask: np.ndarray | None, size: int, index: int, split: str) -> dict:
    """Resize a uint8 image (and id mask) to ``size`` squared and wrap them as tensors."""
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, reducing_gap=None))
    item = {"image": torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0,
            "index": index, "split": SPLIT_IDS[split]}
    if mask is not None:
        if mask.shape != (size, size):
            mask = np.asarray(Image.fromarray(mask.astype(np.int32)).resize((size, size), Image.NEAREST))
        item["mask"] = torch.from_numpy(mask.astype(np.int64))
    return item


class RenderedScenes(Dataset):
    """Scenes rendered from consecutive seeds, cached after the first render."""

    def __init__(self, render: Callable[[int], tuple[np.ndarray, np.ndarray]], count: int, seed: int,
                 image_size: int, split: str) -> None:
        require(count > 0, f"data.num_{split}", f"needs at least one scene, got {count}")
        self.render, self.count, self.seed = render, count, seed
        self.image_size, self.split = image_size, split
        self.cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        if index not in self.cache:
            image, mask = self.render(self.seed + index)
            self.cache[index] = to_item(image, mask, self.image_size, index, self.split)
        return self.cache[index]


def load_mask(path: Path) -> np.ndarray:
    """(H, W) integer ids from a greyscale/palette PNG or an NPY array."""
    if path.suffix.lower() == ".npy":
        mask = np.load(path)
        mask = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
    else:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise ConfigError("data.masks_dir", f"mask '{path}' is {img.mode}; masks must hold one id per "
                                                    "pixel (greyscale, palette PNG or .npy), 0 = background")
            mask = np.asarray(img)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
        raise ConfigError("data.masks_dir", f"mask '{path}' must be a 2-D array of integer ids, "
                                            f"got {mask.dtype} {mask.shape}")
    return mask.astype(np.int64)


class SceneFolder(Dataset):
    """Image/mask pairs from disk; size mismatches are reported with the file and the key."""

    def __init__(self, pairs: Sequence[tuple[Path, Path | None]], image_size: int, split: str) -> None:
        self.pairs, self.image_size, self.split = list(pairs), image_size, split

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path = self.pairs[index]
        image = load_rgb(image_path)
        mask = None
        if mask_path is not None:
            mask = load_mask(mask_path)
            if mask.shape != image.shape[:2]:
                raise ConfigError("data.masks_dir", f"mask '{mask_path.name}' is {mask.shape[1]}x{mask.shape[0]} "
                                                    f"but image '{image_path.name}' is {image.shape[1]}x{image.shape[0]}; "
                                                    "masks must match their image pixel for pixel")
        return to_item(image, mask, self.image_size, index, self.split)


def scene_pairs(folder: Path, images_dir: str, masks_dir: str, require_masks: bool) -> list[tuple[Path, Path | None]]:
    """(image, mask) paths of ``folder``; a missing mask folder or file is an error when masks are required.

    Unreadable images (truncated, oversize, not images) are skipped and counted here, at setup,
    rather than killing a loader worker in the middle of training.
    """
    images = readable(list_images(folder / images_dir, "data.root", recursive=False),
                      CorruptFileReport(f"data.root ({folder / images_dir})"))
    require(bool(images), "data.root", f"no readable image in '{folder / images_dir}'")
    mask_root = folder / masks_dir
    if not mask_root.is_dir():
        if require_masks:
            raise ConfigError("data.masks_dir", f"no mask folder '{mask_root}': evaluation (FG-ARI, mBO) needs one "
                                                "mask per image (0 = background); set data.require_masks=false "
                                                "to train without it")
        return [(p, None) for p in images]
    masks = {p.stem: p for p in mask_root.iterdir() if p.suffix.lower() in (".png", ".npy", *IMAGE_EXTENSIONS)}
    pairs, missing = [], []
    for path in images:
        if path.stem in masks:
            pairs.append((path, masks[path.stem]))
        else:
            missing.append(path.name)
            pairs.append((path, None))
    if missing and require_masks:
        raise ConfigError("data.masks_dir", f"{len(missing)} image(s) have no mask in '{mask_root}' "
                                            f"(e.g. '{missing[0]}'); expected '<image name>.png' or '.npy'")
    if missing:  # a batch must be all with or all without masks
        log.warning("%s: %d image(s) without a mask; masks of this split are not used", mask_root, len(missing))
        return [(p, None) for p, _ in pairs]
    return pairs


def small_set_fractions(n: int, fractions: Sequence[float]) -> list[float]:
    """``fractions`` adjusted so that val and test get at least one scene each (tiny folders)."""
    require(len(fractions) == 3, "data.split", f"give three fractions (train, val, test), got {list(fractions)}")
    held_out = [max(1, round(f * n)) for f in fractions[1:]]
    return [(n - sum(held_out)) / n, *(c / n for c in held_out)]


class SceneDataModule(BaseDataModule):
    """Train/val/test scene splits from the embedded renderer, pybullet, or a folder."""

    test_names = ("test", "eval_train")

    def __init__(
        self,
        source: str = "embedded",
        root: str | None = None,
        images_dir: str = "images",
        masks_dir: str = "masks",
        require_masks: bool = True,
        image_size: int = 128,
        num_train: int = 256,
        num_val: int = 32,
        num_test: int = 32,
        min_objects: int = 3,
        max_objects: int = 6,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        eval_train_in_test: bool = True,
        **loader: Any,
    ) -> None:
        """``loader``: :class:`BaseDataModule`'s settings (batch size, workers, pinning, seed)."""
        super().__init__(**loader)
        if source not in SOURCES:
            raise unknown_name("data.source", source, SOURCES, "scene source")
        require(image_size >= 16, "data.image_size", f"must be >= 16, got {image_size}")
        require(source != "folder" or bool(root), "data.root", "source 'folder' needs data.root (a scene folder)")
        self.source, self.root = source, root
        self.images_dir, self.masks_dir, self.require_masks = images_dir, masks_dir, require_masks
        self.image_size = image_size
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.min_objects, self.max_objects = min_objects, max_objects
        self.split_fractions = tuple(split)
        self.eval_train_in_test = eval_train_in_test
        self.datasets: dict[str, Dataset] = {}

    # -- datasets -----------------------------------------------------------------------------
    def _renderer(self) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
        size, lo, hi = self.image_size, self.min_objects, self.max_objects
        if self.source == "render3d":
            from featlab.data.render3d import import_pybullet, render_scene3d

            import_pybullet()  # fail at setup, with the extra's name, not inside a worker
            return partial(render_scene3d, size=size, min_objects=lo, max_objects=hi)
        return partial(render_scene, size=size, min_objects=lo, max_objects=hi)

    def _folder_splits(self) -> dict[str, Dataset]:
        root = resolve_folder(self.root, "data.root")  # type: ignore[arg-type]
        if (root / "train").is_dir():
            val_dir = next((root / n for n in ("val", "validation") if (root / n).is_dir()), None)
            test_dir = root / "test" if (root / "test").is_dir() else val_dir
            require(val_dir is not None, "data.root", f"'{root}/train' exists but no '{root}/val' (or validation)")
            folders = {"train": root / "train", "val": val_dir, "test": test_dir}
            return {split: SceneFolder(scene_pairs(folder, self.images_dir, self.masks_dir,
                                                   self.require_masks and split != "train"),
                                       self.image_size, split)
                    for split, folder in folders.items()}
        pairs = scene_pairs(root, self.images_dir, self.masks_dir, self.require_masks)
        require(len(pairs) >= 3, "data.root", f"'{root}' has {len(pairs)} scene(s); at least 3 are needed to split")
        indices = seeded_split(len(pairs), small_set_fractions(len(pairs), self.split_fractions), self.seed)
        return {split: SceneFolder([pairs[i] for i in idx], self.image_size, split)
                for split, idx in zip(("train", "val", "test"), indices)}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.source == "folder":
            self.datasets = self._folder_splits()
        else:
            render = self._renderer()
            base = self.seed * 100_000_000
            self.datasets = {split: RenderedScenes(render, self.counts[split], base + SPLIT_SEED_OFFSETS[split],
                                                   self.image_size, split)
                             for split in ("train", "val", "test")}
        for split, dataset in self.datasets.items():
            require(len(dataset) > 0, "data.split", f"the {split} split is empty")  # type: ignore[arg-type]
        log.info("scenes (%s): %s", self.source, {k: len(v) for k, v in self.datasets.items()})  # type: ignore[arg-type]

    # -- loaders ------------------------------------------------------------------------------
    def train_dataloader(self):
        return self.make_loader(self.datasets["train"], train=True)

    def val_dataloader(self):
        return self.make_loader(self.datasets["val"], train=False)

    def test_dataloader(self):
        loaders = [self.make_loader(self.datasets["test"], train=False)]
        if self.eval_train_in_test:
            loaders.append(self.make_loader(self.datasets["train"], train=False))
        return loaders

    def predict_dataloader(self):
        return self.make_loader(self.datasets["test"], train=False)

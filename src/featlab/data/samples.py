"""The embedded default data: real colour photos that ship inside scikit-image's wheel.

Every experiment must run on a fresh machine with no download, so the default SR (and DINO) data
are the handful of colour photos bundled with ``skimage.data``. Only the bundled ones are listed
here: the other ``skimage.data`` images are fetched from the internet and fail offline.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from featlab.errors import unknown_name

# Held-out photos: two natural photos of different content and size, never seen in training.
VAL_PHOTOS: tuple[str, ...] = ("chelsea", "coffee")
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "ihc", "retina",
)
SPLITS = ("all", "train", "val")


def _loaders() -> dict[str, Callable[[], np.ndarray]]:
    """Name -> loader; imported lazily because ``skimage.data`` is slow to import."""
    from skimage import data

    return {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle_left": lambda: data.stereo_motorcycle()[0],
        "motorcycle_right": lambda: data.stereo_motorcycle()[1],
        "hubble_deep_field": data.hubble_deep_field,
        "ihc": data.immunohistochemistry,
        "retina": data.retina,
    }


@cache
def _decoded() -> dict[str, np.ndarray]:
    """Decode every photo once per process; arrays are read-only so no caller can spoil the cache."""
    photos = {}
    for name, load in _loaders().items():
        image = np.ascontiguousarray(load()[..., :3], dtype=np.uint8)
        image.flags.writeable = False
        photos[name] = image
    return photos


def sample_photos(split: str = "all") -> dict[str, np.ndarray]:
    """Embedded photos as ``{name: (H, W, 3) uint8}`` for ``split`` in all | train | val.

    The train/val split is fixed (not seeded) so validation numbers compare across runs and seeds.
    """
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS, "sample split")
    photos = _decoded()
    names = {"all": tuple(photos), "train": TRAIN_PHOTOS, "val": VAL_PHOTOS}[split]
    return {name: photos[name] for name in names}


def center_crop(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """Crop an ``(H, W, ...)`` array to at most ``max_size`` per side around its centre (a view)."""
    if max_size is None:
        return image
    h, w = image.shape[:2]
    ch, cw = min(h, max_size), min(w, max_size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


def export_samples(root: str | Path, max_size: int | None = None) -> dict[str, Path]:
    """Write the photos as ``root/train/<name>.png`` and ``root/val/<name>.png``.

    Lets folder-based code paths (HR folders, benchmark folders, image folders) run on real photos
    without any data set. ``max_size`` center-crops each side, which keeps tests fast.
    """
    folders = {}
    for split in ("train", "val"):
        folder = Path(root) / split
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in sample_photos(split).items():
            Image.fromarray(np.ascontiguousarray(center_crop(image, max_size))).save(folder / f"{name}.png")
        folders[split] = folder
    return folders

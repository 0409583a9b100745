"""Finding and decoding images on disk, with corrupt files counted and reported instead of crashing.

A single unreadable JPEG deep inside a data set must not kill a multi-hour run, but silently
dropping files hides data problems; so every skip is counted and reported once per data set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from featlab.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def resolve_folder(folder: str | Path, key: str) -> Path:
    """Return ``folder`` as an existing directory, or raise a ConfigError naming ``key``."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise ConfigError(key, f"folder '{path}' does not exist; point {key} at a folder of images")
    if not path.is_dir():
        raise ConfigError(key, f"'{path}' is not a folder")
    return path


def list_images(folder: str | Path, key: str, recursive: bool = True) -> list[Path]:
    """Sorted image files below ``folder``; an empty or missing folder is a config error."""
    root = resolve_folder(folder, key)
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ConfigError(key, f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in '{root}'")
    return files


def list_class_folders(root: str | Path, key: str, min_classes: int = 1) -> dict[str, list[Path]]:
    """``root/<class>/*`` -> {class: files}; classes without images are dropped with a warning."""
    base = resolve_folder(root, key)
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            classes[sub.name] = files
        else:
            log.warning("%s: class folder '%s' holds no images and is ignored", key, sub)
    if len(classes) < min_classes:
        raise ConfigError(
            key, f"'{base}' has {len(classes)} class folder(s) with images; at least {min_classes} needed "
            "(layout: root/<class>/<image>)"
        )
    return classes


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image as an ``(H, W, 3)`` uint8 RGB array (grey and RGBA are converted)."""
    with Image.open(path) as img:
        img.load()
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


@dataclass
class CorruptFileReport:
    """Counts the files of one data set that could not be decoded, for a single summary line."""

    name: str
    skipped: list[Path] = field(default_factory=list)

    def add(self, path: Path, reason: str) -> None:
        self.skipped.append(path)
        log.warning("%s: skipping unreadable image '%s' (%s)", self.name, path, reason)

    def summary(self) -> str:
        return f"{self.name}: {len(self.skipped)} unreadable file(s) skipped"


def load_all_rgb(paths: Iterable[Path], report: CorruptFileReport) -> list[tuple[Path, np.ndarray]]:
    """Decode every readable file once (SR data sets are small enough to keep in memory)."""
    images = []
    for path in paths:
        try:
            images.append((path, load_rgb(path)))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            report.add(path, type(err).__name__)
    if report.skipped:
        log.warning(report.summary())
    return images

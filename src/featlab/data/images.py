"""Finding and decoding images on disk, with corrupt files counted and reported instead of crashing.

A single unreadable JPEG deep inside a data set must not kill a multi-hour run, but silently
dropping files hides data problems; so every skip is counted and reported once per data set.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import tempfile
import warnings
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


# Larger images are skipped like unreadable ones (a decompression bomb, or a file no SR pipeline
# should decode whole). PIL's own default; ``data.max_image_pixels`` changes it for a run.
DEFAULT_MAX_PIXELS = 89_478_485
_limits = {"max_pixels": DEFAULT_MAX_PIXELS}
# What a skip-and-count reader catches: undecodable, truncated, oversize, not an image at all.
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class OversizeImageError(ValueError):
    """An image with more pixels than the configured limit (never decoded)."""


def set_max_pixels(limit: int | None) -> None:
    """The pixel limit of :func:`load_rgb` for this process (None: no limit)."""
    if limit is not None and int(limit) <= 0:
        raise ConfigError("data.max_image_pixels", f"must be positive or null, got {limit}")
    _limits["max_pixels"] = None if limit is None else int(limit)


def _to_uint8(img: Image.Image) -> np.ndarray:
    """RGB uint8 from any PIL mode; high-bit-depth greys are scaled to 0..255, never clipped."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img).astype(np.float64)
        if mode == "F":
            peak = 1.0 if values.max(initial=0.0) <= 1.0 else 65535.0
        elif mode == "I" and values.max(initial=0.0) > 65535:
            peak = float(2**32 - 1)
        else:
            peak = 65535.0
        grey = np.clip(np.rint(values / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image as an ``(H, W, 3)`` uint8 RGB array: the one reader of every DataModule, eval
    and upscale.

    Grey, palette and RGBA are converted; 16-bit PNG/TIFF are scaled (65535 -> 255), not clipped.
    An image over the pixel limit raises :class:`OversizeImageError` before decoding; a truncated
    file raises ``OSError``: callers skip and count both like any unreadable file (:data:`UNREADABLE`).
    """
    limit = _limits["max_pixels"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as img:
                width, height = img.size
                if limit is not None and width * height > limit:
                    raise OversizeImageError(f"{width}x{height} pixels is over the limit of {limit} "
                                             "(data.max_image_pixels)")
                img.load()
                return _to_uint8(img)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def reason(err: BaseException) -> str:
    """A short why for a skipped file: the exception type and its first line."""
    text = (str(err).splitlines() or [""])[0][:160]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# Every report made in this process, so the run can list skipped files in results.json.
ALL_REPORTS: list[CorruptFileReport] = []


def skipped_files() -> dict[str, dict]:
    """``{data set: {"count": n, "files": [...]}}`` of every report with skips (for results.json),
    loader workers' skips included."""
    files: dict[str, list[str]] = {}
    for report in ALL_REPORTS:
        report.collect_from_workers()
        if report.skipped:
            names = files.setdefault(report.name, [])
            names += [str(p) for p in report.skipped if str(p) not in names]
    return {name: {"count": len(names), "files": names} for name, names in files.items()}


_REPORT_IDS = itertools.count()


@dataclass
class CorruptFileReport:
    """Counts the files of one data set that could not be decoded, for a single summary line.

    Data sets decoded lazily (DINO's) meet bad files inside DataLoader worker processes, whose copy of
    the report dies with them; a worker therefore also appends each skip to a spool file named by the
    main process, which :meth:`collect_from_workers` reads (``results.json``, ``train.log``).
    """

    name: str
    skipped: list[Path] = field(default_factory=list)
    spool: str = ""

    def __post_init__(self) -> None:
        ALL_REPORTS.append(self)
        if not self.spool:  # a path only: nothing is created unless a worker skips a file
            self.spool = os.path.join(tempfile.gettempdir(), f"featlab-skips-{os.getpid()}-{next(_REPORT_IDS)}.tsv")
            atexit.register(_remove_quietly, self.spool)

    def add(self, path: Path, reason: str) -> None:
        if path in self.skipped:  # lazily decoded sets meet the same bad file every epoch: report it once
            return
        self.skipped.append(path)
        log.warning("%s: skipping unreadable image '%s' (%s)", self.name, path, reason)
        if _in_loader_worker():
            with open(self.spool, "a", encoding="utf-8") as spool:  # one short append per skip
                spool.write(f"{path}\t{reason}\n")

    def collect_from_workers(self) -> None:
        """Take in the skips loader workers spooled (each once)."""
        try:
            lines = Path(self.spool).read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            path, _, why = line.partition("\t")
            if path and Path(path) not in self.skipped:
                self.add(Path(path), why)

    def summary(self) -> str:
        return f"{self.name}: {len(self.skipped)} unreadable file(s) skipped"


def _in_loader_worker() -> bool:
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def readable(paths: Iterable[Path], report: CorruptFileReport) -> list[Path]:
    """The files that decode (checked once at setup), the others skipped and counted in ``report``:
    for data sets decoded lazily by loader workers, where a bad file would otherwise kill training."""
    good = []
    for path in paths:
        try:
            load_rgb(path)
            good.append(path)
        except UNREADABLE as err:
            report.add(path, reason(err))
    if report.skipped:
        log.warning(report.summary())
    return good


def load_all_rgb(paths: Iterable[Path], report: CorruptFileReport) -> list[tuple[Path, np.ndarray]]:
    """Decode every readable file once (SR data sets are small enough to keep in memory)."""
    images = []
    for path in paths:
        try:
            images.append((path, load_rgb(path)))
        except UNREADABLE as err:
            report.add(path, reason(err))
    if report.skipped:
        log.warning(report.summary())
    return images

"""Data for DINO: unlabelled training images (multi-crop) and a labelled set for kNN evaluation.

Training images come from a folder (``root/**/*.jpg``) or, by default, the photos bundled with
scikit-image; the labelled set is ``root/<class>/*`` or, by default, the generated shapes. The
multi-crop runs either in the DataLoader workers (``augment: cpu``; crops travel as uint8) or on
the accelerator (``augment: device``; the loader yields fixed-size uint8 images and the task crops
the whole batch at once), chosen by ``auto`` from whether CUDA is present. Both paths cut their
views from the same square ``image_size`` image (a random square of each photo, resized), so they
draw from one distribution, and the CPU path never resamples a 1400-pixel photo per crop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from featlab.data.base import BaseDataModule, seeded_split
from featlab.data.images import (
    UNREADABLE,
    CorruptFileReport,
    list_class_folders,
    list_images,
    load_rgb,
    reason,
)
from featlab.data.multicrop import MultiCrop, to_uint8
from featlab.data.synthetic_shapes import SHAPE_CLASSES, make_shapes
from featlab.errors import require, unknown_name

log = logging.getLogger(__name__)

AUGMENT_MODES = ("auto", "cpu", "device")


def embedded_photos() -> list[np.ndarray]:
    """The real photos bundled with scikit-image: the embedded unlabelled training set."""
    from featlab.data.samples import sample_photos

    return list(sample_photos("all").values())


class ImageSource:
    """Images by index from memory or from files; a file that fails to decode yields ``None`` once reported."""

    def __init__(self, arrays: Sequence[np.ndarray] | None = None, paths: Sequence[Path] | None = None,
                 name: str = "data") -> None:
        self.arrays = list(arrays) if arrays is not None else None
        self.paths = list(paths) if paths is not None else None
        self.report = CorruptFileReport(name)

    def __len__(self) -> int:
        return len(self.arrays) if self.arrays is not None else len(self.paths or [])

    def get(self, index: int) -> np.ndarray | None:
        if self.arrays is not None:
            return self.arrays[index]
        path = self.paths[index]  # type: ignore[index]
        try:
            return load_rgb(path)
        except UNREADABLE as err:
            self.report.add(path, reason(err))
            return None


def to_chw(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW tensor; read-only arrays (the cached embedded photos) are copied, not shared."""
    return torch.from_numpy(np.array(image, copy=not image.flags.writeable, order="C")).permute(2, 0, 1)


def square_resize(image: torch.Tensor, size: int, random: bool) -> torch.Tensor:
    """A square (random or centred) crop of side min(H, W), resized to ``size`` with antialiasing."""
    _, height, width = image.shape
    side = min(height, width)
    if random:
        top = int(torch.randint(0, height - side + 1, ()).item())
        left = int(torch.randint(0, width - side + 1, ()).item())
    else:
        top, left = (height - side) // 2, (width - side) // 2
    square = image[:, top:top + side, left:left + side].float()
    if side != size:
        square = F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0]
    return square


class MultiCropImages(Dataset):
    """Unlabelled training items: ``{"crops": [uint8 crops]}`` (CPU path) or ``{"images": uint8}`` (device path),
    both from a random square of the image resized to ``image_size``.

    ``length`` can exceed the number of images (the embedded set has nine photos): index ``i``
    reads image ``i % len(source)``, so an epoch is ``length`` random views.
    """

    def __init__(self, source: ImageSource, length: int, multicrop: MultiCrop | None, image_size: int) -> None:
        require(len(source) > 0, "data.train_root", "no training images")
        self.source = source
        self.length = length
        self.multicrop = multicrop
        self.image_size = image_size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = square_resize(self._readable(index), self.image_size, random=True)
        if self.multicrop is None:
            return {"images": image.round().to(torch.uint8)}
        crops = self.multicrop(image[None] / 255.0)
        return {"crops": [to_uint8(c[0]) for c in crops]}

    def _readable(self, index: int) -> torch.Tensor:
        """The image at ``index``, or the next readable one (corrupt files are reported, not fatal)."""
        for step in range(len(self.source)):
            array = self.source.get((index + step) % len(self.source))
            if array is not None:
                return to_chw(array)
        raise RuntimeError(f"{self.source.report.summary()}: no readable image left")


class LabelledImages(Dataset):
    """``(image float [0, 1] (3, S, S), label, index)``: centred square, resized to the eval size."""

    def __init__(self, source: ImageSource, labels: Sequence[int], image_size: int) -> None:
        self.source = source
        self.labels = list(labels)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        array = self.source.get(index)
        if array is None:  # reported by the source; a grey image keeps indices aligned across ranks
            image = torch.full((3, self.image_size, self.image_size), 0.5)
        else:
            image = square_resize(to_chw(array), self.image_size, random=False) / 255.0
        return image, self.labels[index], index


def subset(dataset: LabelledImages, indices: Sequence[int]) -> LabelledImages:
    """A labelled split sharing the parent's source (no copies of the images)."""
    source = dataset.source
    if source.arrays is not None:
        part = ImageSource(arrays=[source.arrays[i] for i in indices], name=source.report.name)
    else:
        part = ImageSource(paths=[source.paths[i] for i in indices], name=source.report.name)  # type: ignore[index]
    return LabelledImages(part, [dataset.labels[i] for i in indices], dataset.image_size)


class DINODataModule(BaseDataModule):
    """Unlabelled multi-crop training data plus the labelled kNN bank/query split.

    ``train_root: null`` uses the embedded photos, ``knn_root: null`` the generated shapes.
    ``include_knn_bank``: also train on the kNN bank images (labels unused), the usual protocol of
    evaluating on the distribution the backbone was trained on (ImageNet train for both).
    """

    def __init__(
        self,
        multicrop: Mapping[str, Any],
        train_root: str | None = None,
        knn_root: str | None = None,
        knn_val_fraction: float = 0.3,
        knn_image_size: int = 224,
        synthetic: Mapping[str, Any] | None = None,
        include_knn_bank: bool = False,
        samples_per_epoch: int | None = None,
        augment: str = "auto",
        image_size: int = 256,
        **loader: Any,
    ) -> None:
        """``loader``: :class:`BaseDataModule`'s settings; DINO's defaults are 64 images and 8 workers."""
        super().__init__(**{"batch_size": 64, "num_workers": 8, **loader})
        if augment not in AUGMENT_MODES:
            raise unknown_name("data.augment", augment, AUGMENT_MODES, "augmentation mode")
        require(0.0 < knn_val_fraction < 1.0, "data.knn_val_fraction", f"must be in (0, 1), got {knn_val_fraction}")
        require(samples_per_epoch is None or samples_per_epoch > 0, "data.samples_per_epoch",
                f"must be positive or null, got {samples_per_epoch}")
        self.multicrop_cfg = dict(multicrop)
        self.multicrop = MultiCrop(**self.multicrop_cfg)   # validates the crop settings at start-up
        self.train_root = train_root
        self.knn_root = knn_root
        self.knn_val_fraction = knn_val_fraction
        self.knn_image_size = knn_image_size
        self.synthetic = dict(synthetic or {})
        self.include_knn_bank = include_knn_bank
        self.samples_per_epoch = samples_per_epoch
        self.augment = augment
        self.image_size = image_size
        self.train_set: MultiCropImages | None = None
        self.knn_bank: LabelledImages | None = None
        self.knn_query: LabelledImages | None = None
        self.class_names: list[str] = []

    @property
    def augment_on_device(self) -> bool:
        """``auto``: crop on the GPU when there is one (the CPU would bottleneck it), else in workers."""
        return self.augment == "device" or (self.augment == "auto" and torch.cuda.is_available())

    def setup(self, stage: str | None = None) -> None:
        if self.knn_bank is None:
            self.knn_bank, self.knn_query = self._labelled_split()
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = self._train_set()

    # -- labelled kNN split ---------------------------------------------------------------------
    def _labelled_split(self) -> tuple[LabelledImages, LabelledImages]:
        if self.knn_root is None:
            images, labels = make_shapes(int(self.synthetic.get("n_per_class", 50)),
                                         int(self.synthetic.get("size", self.knn_image_size)),
                                         int(self.synthetic.get("seed", self.seed)))
            self.class_names = list(SHAPE_CLASSES)
            full = LabelledImages(ImageSource(arrays=list(images), name="knn"), labels.tolist(), self.knn_image_size)
        else:
            classes = list_class_folders(self.knn_root, "data.knn_root", min_classes=2)
            self.class_names = list(classes)
            paths = [p for files in classes.values() for p in files]
            labels = [i for i, files in enumerate(classes.values()) for _ in files]
            full = LabelledImages(ImageSource(paths=paths, name="knn"), labels, self.knn_image_size)
        bank_idx, query_idx = seeded_split(len(full), [1 - self.knn_val_fraction, self.knn_val_fraction], self.seed)
        require(len(bank_idx) > 0 and len(query_idx) > 0, "data.knn_val_fraction",
                f"{len(full)} labelled images cannot be split into a non-empty bank and query set")
        return subset(full, bank_idx), subset(full, query_idx)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def knn_datasets(self) -> tuple[LabelledImages, LabelledImages]:
        """(bank, query) labelled splits for the kNN callback."""
        self.setup("validate")
        return self.knn_bank, self.knn_query  # type: ignore[return-value]

    # -- unlabelled training set ----------------------------------------------------------------
    def _train_set(self) -> MultiCropImages:
        if self.train_root is None:
            source = ImageSource(arrays=embedded_photos(), name="train")
        else:
            source = ImageSource(paths=list_images(self.train_root, "data.train_root"), name="train")
        if self.include_knn_bank:
            bank = self.knn_bank.source  # type: ignore[union-attr]
            if source.arrays is not None and bank.arrays is not None:
                source = ImageSource(arrays=[*source.arrays, *bank.arrays], name="train")
            else:
                source = ImageSource(paths=[*self._paths_of(source), *self._paths_of(bank)], name="train")
        length = self.samples_per_epoch or len(source)
        multicrop = None if self.augment_on_device else self.multicrop
        log.info("DINO training set: %d images, %d views per epoch, multi-crop on %s", len(source), length,
                 "the device" if multicrop is None else "CPU workers")
        return MultiCropImages(source, length, multicrop, self.image_size)

    @staticmethod
    def _paths_of(source: ImageSource) -> list[Path]:
        require(source.paths is not None, "data.include_knn_bank",
                "mixing in-memory and on-disk image sets is not supported; use folders for both")
        return list(source.paths)  # type: ignore[arg-type]

    # -- loaders ----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.train_set, train=True)  # type: ignore[arg-type]

    def test_dataloader(self) -> DataLoader:
        """The kNN query images: the test stage's number is the kNN accuracy the callback logs."""
        return self.make_loader(self.knn_datasets()[1], train=False)

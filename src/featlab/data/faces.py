"""Face identity data for DSR: ``root/<identity>/*.jpg`` split by image into train/val/gallery/probe.

The layout is the one VGGFace2, CASIA-WebFace and LFW already use (aligned crops, one folder per
person). Every identity contributes images to every split, so the recognition test is closed-set:
its gallery holds ``gallery_per_identity`` HR images of each person and its probes are other,
unseen images of the same people, degraded to very low resolution. The split is per identity and
seeded, so it is the same on every rerun and every DDP rank.

Images are decoded once into memory at ``hr_size`` (aligned faces are small: 37 KB each at
112x112, so LFW's 13k images need 0.5 GB; cap very large sets with ``max_identities`` and
``max_images_per_identity``). Training batches carry HR only: augmentation and the degradation
run as tensor ops on the training device in ``on_after_batch_transfer``. Validation, gallery and
probe images get one fixed, seeded LR each, so numbers compare across epochs and runs.

With ``root: null`` the data are the deterministic synthetic faces of
:mod:`featlab.data.synthetic_faces`, generated once into a cache folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from featlab.config import to_plain
from featlab.data.degradations import Degradation, DegradingDataModule
from featlab.data.face_augment import FaceAugment
from featlab.data.images import CorruptFileReport, list_class_folders, load_all_rgb
from featlab.data.synthetic_faces import SyntheticFaceSpec, synthetic_face_root
from featlab.errors import ConfigError, require

log = logging.getLogger(__name__)

TEST_SETS = ("gallery", "probe")


@dataclass
class FaceSplit:
    """Image indices (into the decoded list) per split, and per-image identity labels."""

    train: list[int] = field(default_factory=list)
    val: list[int] = field(default_factory=list)
    gallery: list[int] = field(default_factory=list)
    probe: list[int] = field(default_factory=list)


def split_identity(count: int, gallery: int, probe_fraction: float, val_fraction: float,
                   generator: torch.Generator) -> dict[str, list[int]]:
    """Positions ``0..count-1`` of one identity's images dealt to gallery, probe, val and train.

    Gallery and probe come first (each identity needs at least one of each to be tested), then
    validation, and training gets the rest, which may be nothing for identities with few images.
    """
    order = torch.randperm(count, generator=generator).tolist()
    n_probe = max(1, round(probe_fraction * count))
    n_probe = min(n_probe, count - gallery)
    n_val = min(round(val_fraction * count), count - gallery - n_probe)
    cuts = np.cumsum([gallery, n_probe, n_val])
    return {"gallery": order[: cuts[0]], "probe": order[cuts[0]: cuts[1]], "val": order[cuts[1]: cuts[2]],
            "train": order[cuts[2]:]}


def face_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, size, size)`` uint8: centre square crop, then antialiased resize.

    Aligned face sets are already square at 112 px, where this is a no-op; other sizes are
    accepted so a folder of 250x250 LFW crops works without preprocessing.
    """
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    tensor = torch.from_numpy(np.array(image[top:top + side, left:left + side])).permute(2, 0, 1)
    if side == size:
        return tensor.contiguous()
    resized = F.interpolate(tensor[None].float(), size=(size, size), mode="bicubic", antialias=True,
                            align_corners=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


class FaceDataset(Dataset):
    """Decoded faces: ``{"hr", "label", "index"}`` plus a fixed ``"lr"`` for evaluation sets."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor | None = None) -> None:
        self.images, self.labels, self.lr = images, labels, lr

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {"hr": self.images[index].float().div_(255.0), "label": int(self.labels[index]), "index": index}
        if self.lr is not None:
            item["lr"] = self.lr[index]
        return item


class FaceIdentityDataModule(DegradingDataModule):
    """Identity folders (or the synthetic default) -> HR/VLR face batches and a gallery/probe test."""

    def __init__(
        self,
        root: str | None = None,
        synthetic: Mapping[str, Any] | None = None,
        hr_size: int = 112,
        scale: int = 8,
        gallery_per_identity: int = 1,
        probe_fraction: float = 0.2,
        val_fraction: float = 0.1,
        drop_singletons: bool = False,
        max_identities: int | None = None,
        max_images_per_identity: int | None = None,
        probe_limit: int | None = None,
        split_seed: int | None = None,
        degradation: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        **loader: Any,
    ) -> None:
        """``loader``: :class:`BaseDataModule`'s settings (batch size, workers, pinning, seed).

        ``split_seed`` fixes which images are train/val/gallery/probe (and the fixed LR of the
        evaluation sets) apart from ``seed``, which also orders the training batches. ``None`` means
        ``seed``. Pin it when repeating a study over seeds, so every seed and every configuration is
        tested on the same probes (a paired comparison) and one fitted recogniser never saw them.
        """
        super().__init__(**loader)
        require(isinstance(scale, int) and scale >= 1, "data.scale", f"must be a positive integer, got {scale!r}")
        require(hr_size % scale == 0, "data.scale",
                f"scale {scale} does not divide data.hr_size {hr_size}; the VLR side would be "
                f"{hr_size / scale:g} px (use e.g. scale 8 for 14 px or 7 for 16 px at 112)")
        require(gallery_per_identity >= 1, "data.gallery_per_identity", f"must be >= 1, got {gallery_per_identity}")
        require(0.0 <= probe_fraction < 1.0, "data.probe_fraction", f"must be in [0, 1), got {probe_fraction}")
        require(0.0 <= val_fraction < 1.0, "data.val_fraction", f"must be in [0, 1), got {val_fraction}")
        require(probe_limit is None or probe_limit > 0, "task.eval.limit", f"must be positive, got {probe_limit}")
        self.root = root
        synthetic_options = dict(to_plain(synthetic) or {})
        self.cache_dir = synthetic_options.pop("cache_dir", None)
        try:
            self.synthetic = SyntheticFaceSpec(**synthetic_options)
        except TypeError:
            raise ConfigError("data.synthetic", f"valid keys: identities, images_per_identity, size, seed, "
                              f"cache_dir; got {sorted(synthetic_options)}") from None
        self.hr_size, self.scale = hr_size, scale
        self.gallery_per_identity = gallery_per_identity
        self.probe_fraction, self.val_fraction = probe_fraction, val_fraction
        self.drop_singletons = drop_singletons
        self.max_identities, self.max_images_per_identity = max_identities, max_images_per_identity
        self.probe_limit = probe_limit
        require(split_seed is None or isinstance(split_seed, int), "data.split_seed",
                f"must be an integer or null, got {split_seed!r}")
        self.split_seed = self.seed if split_seed is None else split_seed
        self.degradation = Degradation.from_config(scale, degradation)  # any integer scale: x7 for 16 -> 112
        self.augment = FaceAugment(**dict(to_plain(augment))) if augment is not None else None
        self.identity_names: list[str] = []
        self.datasets: dict[str, FaceDataset] = {}
        self.corrupt_report: CorruptFileReport | None = None
        self.test_names = list(TEST_SETS)

    # -- files -------------------------------------------------------------------------------
    def image_root(self) -> Path:
        """The identity folder tree: the user's ``root`` or the cached synthetic set."""
        if self.root is not None:
            return Path(self.root).expanduser()
        return synthetic_face_root(self.synthetic, self.cache_dir)

    def prepare_data(self) -> None:
        if self.root is None:  # generate once, on one process per node
            self.image_root()

    def _identity_files(self) -> dict[str, list[Path]]:
        classes = list_class_folders(self.image_root(), "data.root", min_classes=2)
        names = sorted(classes)[: self.max_identities] if self.max_identities else sorted(classes)
        return {n: classes[n][: self.max_images_per_identity] if self.max_images_per_identity else classes[n]
                for n in names}

    # -- splits ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        files = self._identity_files()
        self.corrupt_report = CorruptFileReport("data.root")
        decoded: dict[str, list[torch.Tensor]] = {}
        for name, paths in files.items():
            images = [face_tensor(img, self.hr_size) for _, img in load_all_rgb(paths, self.corrupt_report)]
            if images:
                decoded[name] = images
        decoded = self._check_counts(decoded)
        self.identity_names = sorted(decoded)
        images, labels, split = [], [], FaceSplit()
        for label, name in enumerate(self.identity_names):
            generator = torch.Generator().manual_seed(self.split_seed * 1_000_003 + label)
            parts = split_identity(len(decoded[name]), self.gallery_per_identity, self.probe_fraction,
                                   self.val_fraction, generator)
            offset = len(images)
            images += decoded[name]
            labels += [label] * len(decoded[name])
            for part, positions in parts.items():
                getattr(split, part).extend(offset + p for p in positions)
        require(len(split.train) > 0, "data.probe_fraction",
                "no image is left for training; lower data.probe_fraction / data.val_fraction or add images")
        stacked, label_tensor = torch.stack(images), torch.tensor(labels)
        split.probe = self._limited(split.probe)
        self.datasets = {"train": FaceDataset(stacked[split.train], label_tensor[split.train])}
        for part in ("val", "gallery", "probe"):
            index = getattr(split, part)
            hr = stacked[index]
            self.datasets[part] = FaceDataset(hr, label_tensor[index], self._fixed_lr(hr, part))
        log.info("faces: %d identities; train %d, val %d, gallery %d, probe %d images (from %s)",
                 len(self.identity_names), *(len(self.datasets[p]) for p in ("train", "val", "gallery", "probe")),
                 self.image_root())

    def _check_counts(self, decoded: dict[str, list[torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
        """Every identity needs a gallery image and a probe: too few images is an error (or dropped)."""
        need = self.gallery_per_identity + 1
        short = sorted(n for n, imgs in decoded.items() if len(imgs) < need)
        if short and not self.drop_singletons:
            shown = ", ".join(f"'{n}'" for n in short[:3]) + (f" (+{len(short) - 3} more)" if len(short) > 3 else "")
            raise ConfigError("data.root", f"{len(short)} identities have fewer than {need} images ({shown}); "
                              f"the gallery/probe split needs {need} per identity: add images, remove them, or set "
                              "data.drop_singletons=true")
        if short:
            log.warning("faces: dropping %d identities with fewer than %d images", len(short), need)
        kept = {n: imgs for n, imgs in decoded.items() if len(imgs) >= need}
        require(len(kept) >= 2, "data.root", f"identification needs at least 2 identities with {need}+ images; "
                                             f"found {len(kept)}")
        return kept

    def _limited(self, probe: list[int]) -> list[int]:
        """A seeded subset of ``probe_limit`` probes spread over identities (``limit`` for quick evals)."""
        if self.probe_limit is None or self.probe_limit >= len(probe):
            return probe
        pick = torch.randperm(len(probe), generator=torch.Generator().manual_seed(self.split_seed))[: self.probe_limit]
        return [probe[i] for i in sorted(pick.tolist())]

    def _fixed_lr(self, hr_uint8: torch.Tensor, part: str) -> torch.Tensor:
        """One seeded LR per image, independent of batch order and rank."""
        offset = TEST_SETS.index(part) + 1 if part in TEST_SETS else 0
        lr = []
        for i, image in enumerate(hr_uint8):
            generator = torch.Generator().manual_seed((self.split_seed * 10 + offset) * 100_003 + i)
            lr.append(self.degradation(image[None].float() / 255.0, generator=generator)[0])
        return torch.stack(lr) if lr else torch.empty(0, 3, self.hr_size // self.scale, self.hr_size // self.scale)

    # -- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["val"], train=False)

    def test_dataloader(self) -> list[DataLoader]:
        """Gallery first, then probes: the task embeds the gallery before it identifies any probe."""
        return [self.make_loader(self.datasets[name], train=False) for name in TEST_SETS]

    # -- augmentation on the device ------------------------------------------------------------
    def augment_on_device(self, hr: torch.Tensor) -> torch.Tensor:
        """Training faces are augmented as tensors on the device, then degraded there."""
        return self.augment(hr) if self.augment is not None else hr

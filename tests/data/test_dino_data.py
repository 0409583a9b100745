"""DINO data: CPU and device batch formats, the labelled kNN split, folders and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featlab.data.dino import DINODataModule
from featlab.data.synthetic_shapes import write_shapes_folder
from featlab.errors import ConfigError

CROPS = {"global_crops_size": 32, "local_crops_size": 16, "local_crops_number": 2}


def datamodule(**kwargs) -> DINODataModule:
    base = {"multicrop": CROPS, "batch_size": 3, "num_workers": 0, "samples_per_epoch": 6, "knn_image_size": 24,
            "synthetic": {"n_per_class": 3, "size": 24}, "augment": "cpu"}
    dm = DINODataModule(**{**base, **kwargs})
    dm.setup("fit")
    return dm


def write_photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_cpu_path_yields_uint8_crops_of_the_embedded_photos():
    batch = next(iter(datamodule().train_dataloader()))
    assert [tuple(c.shape) for c in batch["crops"]] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 2
    assert all(c.dtype == torch.uint8 for c in batch["crops"])


def test_device_path_yields_fixed_size_uint8_images():
    batch = next(iter(datamodule(augment="device", image_size=40).train_dataloader()))
    assert batch["images"].shape == (3, 3, 40, 40) and batch["images"].dtype == torch.uint8


def test_knn_split_is_disjoint_complete_and_labelled():
    bank, query = datamodule().knn_datasets()
    assert len(bank) + len(query) == 30 and len(query) == 9
    image, label, index = query[0]
    assert image.shape == (3, 24, 24) and image.min() >= 0.0 and image.max() <= 1.0 and 0 <= label < 10
    bank_images = {bank[i][0].sum().item() for i in range(len(bank))}
    assert not any(query[i][0].sum().item() in bank_images for i in range(len(query)))


def test_folders_train_and_evaluate_and_a_corrupt_file_is_skipped(tmp_path):
    train = write_photos(tmp_path / "train" / "nested", 2).parent
    (train / "broken.jpg").write_bytes(b"not a jpeg")
    knn = write_shapes_folder(tmp_path / "knn", 2, size=16)
    dm = datamodule(train_root=str(train), knn_root=str(knn), samples_per_epoch=None, include_knn_bank=True)
    assert len(dm.train_set) == 3 + 14   # 3 training files (one unreadable) + the 14-image kNN bank
    crops = [dm.train_set[i]["crops"] for i in range(3)]
    assert all(c[0].shape == (3, 32, 32) for c in crops)
    assert len(dm.train_set.source.report.skipped) >= 1
    assert dm.num_classes == 10


def test_bad_data_names_its_key(tmp_path):
    write_photos(tmp_path / "one_class" / "cats", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.knn_root"):
        datamodule(knn_root=str(tmp_path / "one_class"))
    with pytest.raises(ConfigError, match="data.train_root"):
        datamodule(train_root=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="data.augment"):
        datamodule(augment="gpu")
    with pytest.raises(ConfigError, match="data.multicrop.local_crops_number"):
        datamodule(multicrop={**CROPS, "local_crops_number": -2})

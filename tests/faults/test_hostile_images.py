"""A corpus of hostile images (16-bit, decompression bomb, oversize, truncated, tiny, not an image)
through the one image reader, every folder DataModule, eval's data path and upscale."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featlab.config import compose
from featlab.data.build import build_datamodule
from featlab.data.images import DEFAULT_MAX_PIXELS, OversizeImageError, load_rgb, set_max_pixels
from featlab.errors import ConfigError

HOSTILE = ("bomb.png", "truncated.png", "truncated_jpeg.jpg", "not_an_image.png")


def _png_with_size(path: Path, width: int, height: int) -> None:
    """A tiny file whose header claims ``width`` x ``height``: a decompression bomb's calling card."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _photo(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))


def make_corpus(folder: Path, good: int = 3, size: int = 64) -> Path:
    """``good`` readable photos plus one of each hostile kind, and a 16-bit grey PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        Image.fromarray(_photo(i, size)).save(folder / f"good{i}.png")
    grey16 = (np.linspace(0, 65535, size * size).reshape(size, size)).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    _png_with_size(folder / "bomb.png", 40_000, 40_000)
    Image.fromarray(_photo(7, size)).save(folder / "full.png")
    data = (folder / "full.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "full.png").unlink()
    Image.fromarray(_photo(8, size)).save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated_jpeg.jpg").write_bytes(data[: len(data) // 2])
    (folder / "full.jpg").unlink()
    (folder / "not_an_image.png").write_text("this is not a PNG")
    return folder


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    make_corpus(tmp_path)
    grey = load_rgb(tmp_path / "grey16.png")
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
    assert abs(float(grey.mean()) - 127.5) < 2  # a linear ramp stays a ramp (clipping gave ~99 % white)
    tifffile = pytest.importorskip("tifffile")
    rgb16 = np.stack([np.full((8, 8), v, dtype=np.uint16) for v in (0, 32768, 65535)], axis=-1)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16)
    assert load_rgb(tmp_path / "rgb16.tif")[0, 0].tolist() == [0, 128, 255]


def test_bombs_and_oversize_images_are_refused_before_decoding(tmp_path):
    make_corpus(tmp_path)
    with pytest.raises(OversizeImageError, match="data.max_image_pixels"):
        load_rgb(tmp_path / "bomb.png")
    try:
        set_max_pixels(32 * 32)
        with pytest.raises(OversizeImageError):
            load_rgb(tmp_path / "good0.png")
    finally:
        set_max_pixels(DEFAULT_MAX_PIXELS)
    with pytest.raises(OSError):
        load_rgb(tmp_path / "truncated.png")


def _datamodule(overrides: list[str]):
    return build_datamodule(compose(["data.num_workers=0", *overrides]).data)


def _skipped_names(reports) -> set[str]:
    return {Path(p).name for report in reports for p in report.skipped}


def test_sr_folders_skip_and_count_every_hostile_file(tmp_path):
    make_corpus(tmp_path / "train", size=96)
    make_corpus(tmp_path / "val", size=96)
    dm = _datamodule(["data=sr_folders", f"data.train_dirs=[{tmp_path / 'train'}]",
                      f"data.val_dirs={{bench: {tmp_path / 'val'}}}", "data.hr_crop=32"])
    dm.setup("fit")
    assert _skipped_names(dm.corrupt_reports.values()) == set(HOSTILE)
    assert len(dm.train_set.images) == 4 and len(dm.val_sets["bench"]) == 4  # 3 photos + the 16-bit one
    batch = next(iter(dm.train_dataloader()))
    assert torch.isfinite(batch["hr"]).all()


def test_sr_benchmark_images_too_small_for_ssim_are_rejected_at_setup(tmp_path):
    make_corpus(tmp_path / "train", size=96)
    (tmp_path / "val").mkdir()
    Image.fromarray(_photo(1, 64)).save(tmp_path / "val" / "ok.png")
    Image.fromarray(np.zeros((3, 3, 3), dtype=np.uint8)).save(tmp_path / "val" / "tiny.png")
    dm = _datamodule(["data=sr_folders", f"data.train_dirs=[{tmp_path / 'train'}]",
                      f"data.val_dirs={{bench: {tmp_path / 'val'}}}", "data.hr_crop=32"])
    with pytest.raises(ConfigError, match=r"data.val_dirs.bench.*tiny"):
        dm.setup("fit")


def test_sr_folders_without_val_dirs_is_one_line():
    with pytest.raises(ConfigError, match="^data.val_dirs: is required"):
        _datamodule(["data=sr_folders", "data.train_dirs=[/tmp]"])


def test_faces_folder_skips_and_counts(tmp_path):
    for person in ("ann", "bob", "cyd"):
        make_corpus(tmp_path / person, good=4, size=112)
    dm = _datamodule(["data=faces_folder", f"data.root={tmp_path}", "data.batch_size=2"])
    dm.setup("fit")
    assert _skipped_names([dm.corrupt_report]) == set(HOSTILE)
    assert len(dm.corrupt_report.skipped) == 3 * len(HOSTILE)


def test_scenes_folder_skips_and_counts(tmp_path):
    make_corpus(tmp_path / "images", good=6)
    dm = _datamodule(["data=scenes_folder", f"data.root={tmp_path}", "data.require_masks=false",
                      "data.image_size=32", "data.batch_size=2"])
    dm.setup("fit")
    items = [dm.datasets[split][i] for split in ("train", "val", "test") for i in range(len(dm.datasets[split]))]
    assert len(items) == 7 and all(torch.isfinite(item["image"].float()).all() for item in items)


def test_dino_folders_skip_unreadable_files(tmp_path):
    for cls in ("a", "b"):
        make_corpus(tmp_path / "knn" / cls, good=3, size=48)
    make_corpus(tmp_path / "train", good=4, size=48)
    dm = _datamodule(["experiment=dino_resnet18", "data=dino_folders", f"data.train_root={tmp_path / 'train'}",
                      f"data.knn_root={tmp_path / 'knn'}", "data.batch_size=2"])
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = [batch for _, batch in zip(range(4), loader, strict=False)]
    assert batches


def test_skips_met_in_loader_workers_reach_the_main_process(tmp_path):
    """DINO decodes lazily, in DataLoader workers: their skips must still reach results.json."""
    from torch.utils.data import DataLoader

    from featlab.data.dino import ImageSource, MultiCropImages
    from featlab.data.images import skipped_files

    folder = make_corpus(tmp_path / "train", good=2, size=48)
    source = ImageSource(paths=sorted(folder.iterdir()), name="dino worker test")
    dataset = MultiCropImages(source, length=2 * len(source), multicrop=None, image_size=32)
    for _ in DataLoader(dataset, batch_size=4, num_workers=2):
        pass
    assert source.report.skipped == []  # the main process decoded nothing itself
    entry = skipped_files()["dino worker test"]
    assert {Path(f).name for f in entry["files"]} == set(HOSTILE) and entry["count"] == len(HOSTILE)


@pytest.mark.slow
def test_upscale_skips_hostile_inputs_and_writes_the_rest(tmp_path):
    from featlab.nets.sr import ESPCN
    from featlab.tools.checkpoint import save_net_checkpoint
    from featlab.tools.upscale import main

    make_corpus(tmp_path / "in", good=2, size=16)
    ckpt = save_net_checkpoint(tmp_path / "net.ckpt", {"_target_": "featlab.nets.sr.espcn.ESPCN", "scale": 2},
                               ESPCN(2))
    assert main([f"ckpt_path={ckpt}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == ["good0.png", "good1.png", "grey16.png"]


@pytest.mark.slow
def test_training_reports_skips_in_results_json_and_train_log(train_run, tmp_path):
    make_corpus(tmp_path / "train", size=64)
    make_corpus(tmp_path / "val", size=64)
    results, run_dir = train_run(["experiment=sisr_l1", "net=espcn", "data=sr_folders",
                                  f"data.train_dirs=[{tmp_path / 'train'}]",
                                  f"data.val_dirs={{bench: {tmp_path / 'val'}}}", "data.hr_crop=16",
                                  "data.batch_size=2", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                                  "trainer.limit_val_batches=1", "test_after_fit=false"])
    assert results["status"] == "finished"
    skipped = json.loads((run_dir / "results.json").read_text())["skipped_files"]
    assert {Path(f).name for entry in skipped.values() for f in entry["files"]} == set(HOSTILE)
    assert sum(entry["count"] for entry in skipped.values()) == 2 * len(HOSTILE)
    log = (run_dir / "train.log").read_text()
    assert "bomb.png" in log and "truncated.png" in log

"""SR data: embedded photos, patch/LR alignment, folder errors, corrupt files, per-benchmark loaders."""

from __future__ import annotations

import logging
import shutil
import socket

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from featlab.data import samples
from featlab.data.degradations import bicubic_downsample
from featlab.data.sr import SRDataModule, SRTrainDataset
from featlab.errors import ConfigError

NOISY = {"noise_sigma": [2.0, 8.0]}


def make_dm(**kwargs) -> SRDataModule:
    options = dict(scale=4, hr_crop=32, batch_size=4, num_workers=0, repeat=2, val_max_size=64)
    options.update(kwargs)
    return SRDataModule(**options)


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory):
    """The embedded photos exported as PNG folders (centre-cropped to 96 px to stay fast)."""
    return samples.export_samples(tmp_path_factory.mktemp("photos"), max_size=96)


# -- embedded photos ----------------------------------------------------------------------------
def test_sample_photos_load_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    samples._decoded.cache_clear()
    photos = samples.sample_photos()
    assert sorted(photos) == sorted(samples.TRAIN_PHOTOS + samples.VAL_PHOTOS)
    for image in photos.values():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 256


def test_sample_split_is_fixed_disjoint_and_read_only():
    train, val = samples.sample_photos("train"), samples.sample_photos("val")
    assert list(val) == list(samples.VAL_PHOTOS) and not set(train) & set(val)
    assert not train["astronaut"].flags.writeable
    with pytest.raises(ConfigError, match="split"):
        samples.sample_photos("holdout")


def test_export_samples_writes_the_same_pixels(tmp_path):
    from featlab.data.images import load_rgb

    folders = samples.export_samples(tmp_path, max_size=48)
    written = load_rgb(folders["val"] / "coffee.png")
    original = samples.sample_photos("val")["coffee"]
    h, w = original.shape[:2]
    assert np.array_equal(written, original[(h - 48) // 2:(h - 48) // 2 + 48, (w - 48) // 2:(w - 48) // 2 + 48])
    assert len(list(folders["train"].glob("*.png"))) == len(samples.TRAIN_PHOTOS)


# -- training patches ---------------------------------------------------------------------------
def dihedral_variants(patch: np.ndarray) -> list[np.ndarray]:
    rotations = [np.rot90(patch, k) for k in range(4)]
    return rotations + [r[:, ::-1] for r in rotations]


def test_training_patch_is_a_transformed_window_and_lr_is_exact_bicubic():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)
    dataset = SRTrainDataset([("img", source)], hr_crop=8, repeat=3, degradation=make_dm().degradation)
    assert len(dataset) == 3
    torch.manual_seed(0)
    for _ in range(6):
        sample = dataset[0]
        assert sample["hr"].shape == (3, 8, 8) and sample["lr"].shape == (3, 2, 2)
        assert torch.equal(sample["lr"], bicubic_downsample(sample["hr"][None], 4)[0])
        patch = (sample["hr"] * 255).round().byte().permute(1, 2, 0).numpy()
        windows = [source[t:t + 8, x:x + 8] for t in range(13) for x in range(19)]
        assert any(np.array_equal(v, w) for v in dihedral_variants(patch) for w in windows)


def test_train_batches_from_the_embedded_photos():
    dm = make_dm()
    dm.setup("fit")
    assert len(dm.train_set) == 2 * len(samples.TRAIN_PHOTOS)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"lr", "hr", "name"}
    assert batch["hr"].shape == (4, 3, 32, 32) and batch["lr"].shape == (4, 3, 8, 8)
    assert len(batch["name"]) == 4 and set(batch["name"]) <= set(samples.TRAIN_PHOTOS)
    assert torch.equal(batch["lr"], bicubic_downsample(batch["hr"], 4))


def test_gpu_degradation_sends_hr_only_and_the_hook_adds_lr():
    dm = make_dm(gpu_degradation=True, degradation=NOISY)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "lr" not in batch
    batch = dm.on_after_batch_transfer(batch, 0)
    assert batch["lr"].shape == (4, 3, 8, 8)
    val_batch = next(iter(dm.val_dataloader()[0]))
    assert dm.on_after_batch_transfer(val_batch, 0)["lr"] is val_batch["lr"]  # eval LR is left alone


# -- config errors ------------------------------------------------------------------------------
def test_hr_crop_must_divide_by_scale():
    with pytest.raises(ConfigError, match=r"data\.hr_crop: 128 is not divisible by data\.scale=3; use e\.g\. 126"):
        make_dm(scale=3, hr_crop=128)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"scale": 0}, "data.scale"), ({"repeat": 0}, "data.repeat"), ({"eval_batch_size": 4}, "data.eval_batch_size"),
     ({"degradation": {"blur": 1.0}}, "data.degradation"), ({"val_max_size": 2}, "data.val_max_size")],
)
def test_bad_values_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_dm(**kwargs)


def test_missing_and_empty_folders_name_the_key(tmp_path, photo_dirs):
    with pytest.raises(ConfigError, match=r"data\.train_dirs\[0\].*does not exist"):
        make_dm(train_dirs=[str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data\.train_dirs\[1\].*no images"):
        make_dm(train_dirs=[str(photo_dirs["train"]), str(tmp_path / "empty")])
    with pytest.raises(ConfigError, match=r"data\.val_dirs\.set5"):
        make_dm(val_dirs={"set5": str(tmp_path / "Set5")})
    with pytest.raises(ConfigError, match=r"data\.test_dirs\.set14"):
        make_dm(test_dirs={"set14": str(tmp_path / "empty")})


def test_corrupt_files_are_skipped_counted_and_reported(tmp_path, photo_dirs, caplog):
    folder = tmp_path / "hr"
    shutil.copytree(photo_dirs["train"], folder)
    (folder / "garbage.png").write_bytes(b"definitely not a png" * 10)
    dm = make_dm(train_dirs=[str(folder)], val_dirs={"mini": str(photo_dirs["val"])})
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.num_skipped == 1
    assert [p.name for p in dm.corrupt_reports["data.train_dirs[0]"].skipped] == ["garbage.png"]
    assert "garbage" not in {name for name, _ in dm.train_set.images}
    assert len(dm.train_set.images) == len(samples.TRAIN_PHOTOS)
    assert "1 unreadable file(s) skipped" in caplog.text


def test_a_folder_of_only_corrupt_files_is_a_config_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x00" * 64)
    dm = make_dm(train_dirs=[str(tmp_path)])
    with pytest.raises(ConfigError, match=r"data\.train_dirs\[0\].*could be decoded"):
        dm.setup("fit")


def test_images_smaller_than_the_crop_are_skipped_or_an_error(tmp_path, photo_dirs):
    folder = tmp_path / "hr"
    shutil.copytree(photo_dirs["train"], folder)
    Image.fromarray(samples.sample_photos("val")["chelsea"][:40, :50].copy()).save(folder / "tiny.png")
    dm = make_dm(train_dirs=[str(folder)], hr_crop=64)
    dm.setup("fit")
    assert dm.too_small == [("tiny", (40, 50))]
    assert len(dm.train_set.images) == len(samples.TRAIN_PHOTOS)
    with pytest.raises(ConfigError, match=r"data\.hr_crop: 128 is larger than every training image.*96x96"):
        make_dm(train_dirs=[str(folder)], hr_crop=128).setup("fit")


# -- benchmarks ---------------------------------------------------------------------------------
def test_one_loader_per_benchmark_with_whole_images(photo_dirs, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.fromarray(samples.sample_photos("val")["coffee"][:50, :61].copy()).save(odd / "coffee_crop.png")
    dm = make_dm(scale=3, hr_crop=30, val_max_size=None,
                 val_dirs={"set_a": str(photo_dirs["val"]), "set_b": str(odd)})
    assert dm.val_names == ["set_a", "set_b"] and dm.test_names == ["set_a", "set_b"]
    dm.setup("validate")
    loaders = dm.val_dataloader()
    assert len(loaders) == 2
    seen = {}
    for name, loader in zip(dm.val_names, loaders):
        for batch in loader:
            assert batch["hr"].shape[0] == 1
            h, w = batch["hr"].shape[-2:]
            assert h % 3 == 0 and w % 3 == 0 and batch["lr"].shape[-2:] == (h // 3, w // 3)
            seen.setdefault(name, []).append((batch["name"][0], (h, w)))
    assert seen["set_a"] == [("chelsea", (96, 96)), ("coffee", (96, 96))]
    assert seen["set_b"] == [("coffee_crop", (48, 60))]  # modcrop drops the bottom/right remainder
    dm.setup("test")
    assert dm.test_sets is dm.val_sets


def test_separate_test_benchmarks(photo_dirs):
    dm = make_dm(val_dirs=[str(photo_dirs["val"])], test_dirs={"holdout": str(photo_dirs["train"])})
    assert dm.val_names == ["val"] and dm.test_names == ["holdout"]
    dm.setup("test")
    assert len(dm.test_dataloader()[0]) == len(samples.TRAIN_PHOTOS)


def test_embedded_val_is_centre_cropped_and_named_samples():
    dm = make_dm(val_max_size=40)
    assert dm.val_names == ["samples"]
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()[0]))
    assert batch["hr"].shape == (1, 3, 40, 40) and batch["lr"].shape == (1, 3, 10, 10)
    image = samples.sample_photos("val")["chelsea"]
    top, left = (image.shape[0] - 40) // 2, (image.shape[1] - 40) // 2
    expected = torch.from_numpy(image[top:top + 40, left:left + 40].copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(batch["hr"][0], expected)


def test_validation_lr_is_the_same_every_epoch_and_follows_the_seed():
    def val_lrs(seed):
        dm = make_dm(degradation=NOISY, seed=seed)
        dm.setup("validate")
        return [b["lr"] for b in dm.val_dataloader()[0]]

    first, again, other = val_lrs(0), val_lrs(0), val_lrs(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


# -- through a real Trainer ---------------------------------------------------------------------
class TinySR(L.LightningModule):
    """Bicubic + one conv: just enough to see batches arrive where the SR task expects them."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.val_seen: list[tuple[int, str, tuple[int, ...]]] = []

    def forward(self, lr):
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic")
        return up + self.conv(up)

    def training_step(self, batch, batch_idx):
        assert "lr" in batch  # gpu_degradation: added by the DataModule's transfer hook
        return F.l1_loss(self(batch["lr"]), batch["hr"])

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.val_seen.append((dataloader_idx, batch["name"][0], tuple(batch["lr"].shape)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_trainer_sees_device_side_lr_and_one_val_loader_per_benchmark(photo_dirs):
    dm = make_dm(gpu_degradation=True, degradation=NOISY, train_dirs=[str(photo_dirs["train"])],
                 val_dirs={"a": str(photo_dirs["val"]), "b": str(photo_dirs["val"])})
    model = TinySR(scale=4)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    assert sorted(model.val_seen) == [(0, "chelsea", (1, 3, 16, 16)), (1, "chelsea", (1, 3, 16, 16))]


# -- the real entry point -----------------------------------------------------------------------
def test_sisr_run_on_folders_reports_every_benchmark(train_run, photo_dirs):
    """data=sr_folders through train.py: two benchmark folders, degradations made on the device."""
    results, _ = train_run([
        "experiment=sisr_l1", "pretrained=false", "trainer.fast_dev_run=true", "data=sr_folders",
        f"data.train_dirs=[{photo_dirs['train']}]",
        f"data.val_dirs={{set5: {photo_dirs['val']}, set14: {photo_dirs['train']}}}",
        "data.hr_crop=32", "data.batch_size=2", "data.val_max_size=48", "data.gpu_degradation=true",
        "data.degradation.noise_sigma=[1,5]", "data.degradation.jpeg_quality=[60,95]",
        "net.n_resblocks=1", "net.n_feats=8",
    ])
    assert results["status"] == "finished", results.get("error")
    for key in ("test/set5/psnr", "test/set5/ssim", "test/set5/ms_ssim", "test/set14/psnr", "test/set14/psnr_bicubic",
                "test/set14/ms_ssim_bicubic"):
        assert key in results["metrics"], sorted(results["metrics"])

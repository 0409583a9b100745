"""Scene data for the slots task: exact 2D renders, scene folders, the MOVi converter, errors."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from PIL import Image

from featlab.data.render2d import render, sample_scene, shape_colour, shape_mask
from featlab.data.scenes import SceneDataModule
from featlab.errors import ConfigError
from featlab.tools.movi_convert import convert


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_2d_masks_are_exact_top_most_object_per_pixel(seed):
    """Render every shape alone; the scene mask must name the LAST drawn shape covering each pixel."""
    scene = sample_scene(seed, size=64)
    image, mask = render(scene)
    expected = np.zeros((64, 64), dtype=np.int64)
    colours = scene.background.copy()
    for i, shape in enumerate(scene.shapes):
        alone = shape_mask(shape, 64)
        expected[alone] = i + 1
        colours[alone] = shape_colour(shape, 64)[alone]
    assert np.array_equal(mask, expected)
    assert np.array_equal(image, (colours * 255).round().astype(np.uint8))  # pixels show that object's colour
    assert 3 <= len(scene.shapes) <= 6
    present = set(np.unique(mask).tolist()) - {0}
    assert present == set(range(1, len(scene.shapes) + 1))  # every object stays visible after occlusion


def test_scenes_are_deterministic_and_differ_by_seed():
    a, b, c = render(sample_scene(3, 48)), render(sample_scene(3, 48)), render(sample_scene(4, 48))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_embedded_datamodule_items_and_disjoint_splits():
    dm = SceneDataModule(image_size=32, num_train=4, num_val=2, num_test=2, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].shape == (2, 32, 32)
    assert batch["image"].dtype == torch.float32 and 0 <= batch["image"].min() <= batch["image"].max() <= 1
    assert batch["mask"].dtype == torch.int64
    train0, test0 = dm.datasets["train"][0], dm.datasets["test"][0]
    assert not torch.equal(train0["image"], test0["image"])
    assert [len(loader) for loader in dm.test_dataloader()] == [1, 2]  # test, then the training split


def write_scene_folder(root, count=4, size=(20, 16), mask_format="png"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"s{i}.png")
        mask = np.zeros(size, dtype=np.uint8)
        mask[2:8, 3:9], mask[10:15, 5:12] = 1, 3
        if mask_format == "npy":
            np.save(root / "masks" / f"s{i}.npy", mask.astype(np.int32))
        else:
            palette_png = Image.fromarray(mask, mode="P")
            palette_png.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
            palette_png.save(root / "masks" / f"s{i}.png")


@pytest.mark.parametrize("mask_format", ["png", "npy"])
def test_scene_folder_loads_palette_png_and_npy_masks(tmp_path, mask_format):
    write_scene_folder(tmp_path, count=10, mask_format=mask_format)
    dm = SceneDataModule(source="folder", root=str(tmp_path), image_size=16, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert sum(len(d) for d in dm.datasets.values()) == 10
    item = dm.datasets["train"][0]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (16, 16)
    assert set(item["mask"].unique().tolist()) == {0, 1, 3}  # ids survive resizing (nearest)


def test_scene_folder_errors_name_the_key(tmp_path):
    write_scene_folder(tmp_path / "ok")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "ok" / "masks" / "s0.png")  # wrong size
    dm = SceneDataModule(source="folder", root=str(tmp_path / "ok"), image_size=16, num_workers=0,
                         split=(0.5, 0.25, 0.25))
    dm.setup("fit")
    dataset = next(d for d in dm.datasets.values() if any(p[0].name == "s0.png" for p in d.pairs))
    index = next(i for i, p in enumerate(dataset.pairs) if p[0].name == "s0.png")
    with pytest.raises(ConfigError, match=r"data.masks_dir: mask 's0.png' is 5x5 but image 's0.png' is 16x20"):
        dataset[index]

    write_scene_folder(tmp_path / "nomasks")
    for p in (tmp_path / "nomasks" / "masks").iterdir():
        p.unlink()
    (tmp_path / "nomasks" / "masks").rmdir()
    with pytest.raises(ConfigError, match="data.masks_dir: no mask folder"):
        SceneDataModule(source="folder", root=str(tmp_path / "nomasks"), num_workers=0).setup("fit")
    unsupervised = SceneDataModule(source="folder", root=str(tmp_path / "nomasks"), require_masks=False,
                                   num_workers=0, image_size=16)
    unsupervised.setup("fit")
    assert "mask" not in unsupervised.datasets["train"][0]
    with pytest.raises(ConfigError, match="data.root"):
        SceneDataModule(source="folder", root=None)
    with pytest.raises(ConfigError, match="data.source"):
        SceneDataModule(source="clevr")


def test_render3d_without_pybullet_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_pybullet(name, *args, **kwargs):
        if name == "pybullet":
            raise ImportError("No module named 'pybullet'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pybullet)
    with pytest.raises(ConfigError, match=r"data.source: .*featlab\[render3d\]"):
        SceneDataModule(source="render3d", num_workers=0).setup("fit")


def test_render3d_masks_come_from_the_segmentation_buffer():
    pytest.importorskip("pybullet")
    from featlab.data.render3d import render_scene3d

    image, mask = render_scene3d(0, size=48)
    again, _ = render_scene3d(0, size=48)
    assert image.shape == (48, 48, 3) and mask.shape == (48, 48) and np.array_equal(image, again)
    assert 1 <= mask.max() <= 6 and set(np.unique(mask).tolist()) == set(range(int(mask.max()) + 1))


def test_movi_converter_reads_npz_and_kubric_exports(tmp_path):
    video = np.random.default_rng(0).integers(0, 255, (24, 12, 12, 3), dtype=np.uint8)
    seg = np.zeros((24, 12, 12, 1), dtype=np.uint8)
    seg[:, 2:6, 2:6, 0], seg[:, 7:10, 7:10, 0] = 1, 2
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "00000.npz", video=video, segmentations=seg)
    assert convert(tmp_path / "npz", tmp_path / "out", every=8) == 3  # frames 0, 8, 16
    out_mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "00000_08.png"))
    assert np.array_equal(out_mask, seg[8, ..., 0])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "images" / "00000_08.png")), video[8])

    scene = tmp_path / "kubric" / "scene_a"
    scene.mkdir(parents=True)
    for f in range(2):
        Image.fromarray(np.concatenate([video[f], np.full((12, 12, 1), 255, np.uint8)], -1)).save(
            scene / f"rgba_{f:05d}.png")
        palette = Image.fromarray(seg[f, ..., 0], mode="P")
        palette.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * 759)
        palette.save(scene / f"segmentation_{f:05d}.png")
    assert convert(tmp_path / "kubric", tmp_path / "out2", frames=[1]) == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out2" / "masks" / "scene_a_01.png")), seg[1, ..., 0])

    dm = SceneDataModule(source="folder", root=str(tmp_path / "out"), image_size=16, num_workers=0)
    dm.setup("fit")
    assert sum(len(d) for d in dm.datasets.values()) == 3
    with pytest.raises(ConfigError, match="src"):
        convert(tmp_path / "kubric" / "missing", tmp_path / "out3")

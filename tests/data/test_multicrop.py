"""Multi-crop: view shapes and order, RandomResizedCrop boxes, per-sample ops, bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from featlab.data.multicrop import MultiCrop, gray, sample_crop_boxes, to_float_crops, to_uint8
from featlab.errors import ConfigError


def test_views_have_the_configured_sizes_order_and_range():
    torch.manual_seed(0)
    mc = MultiCrop(global_crops_size=32, local_crops_size=16, local_crops_number=3)
    crops = mc(torch.randint(0, 256, (4, 3, 48, 40), dtype=torch.uint8))
    assert mc.ncrops == 5 and mc.crop_sizes == [32, 32, 16, 16, 16]
    assert [tuple(c.shape) for c in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 and c.min() >= 0 and c.max() <= 1 for c in crops)


def test_cpu_path_on_one_image_matches_the_batched_shapes_and_survives_uint8_round_trip():
    mc = MultiCrop(global_crops_size=24, local_crops_size=8, local_crops_number=2)
    crops = [to_uint8(c[0]) for c in mc(torch.randint(0, 256, (1, 3, 50, 70), dtype=torch.uint8))]
    assert [c.dtype for c in crops] == [torch.uint8] * 4
    back = to_float_crops([c[None] for c in crops])
    assert [tuple(c.shape) for c in back] == [(1, 3, 24, 24)] * 2 + [(1, 3, 8, 8)] * 2


def test_crop_boxes_lie_inside_the_image_with_area_and_ratio_in_range():
    torch.manual_seed(0)
    height, width = 60, 90
    boxes = sample_crop_boxes(4000, height, width, (0.05, 0.4), (math.log(3 / 4), math.log(4 / 3)))
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width + 1e-4).all() and (y2 <= height + 1e-4).all()
    area = (x2 - x1) * (y2 - y1) / (height * width)
    ratio = (x2 - x1) / (y2 - y1)
    assert area.min() >= 0.05 - 1e-5 and area.max() <= 0.4 + 1e-5
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4


def test_fallback_is_the_centred_largest_box_when_no_draw_fits():
    """A 1x100 strip cannot hold any crop of ratio 3/4..4/3 and area >= 5%: centred fallback."""
    boxes = sample_crop_boxes(5, 1, 100, (0.5, 1.0), (math.log(3 / 4), math.log(4 / 3)))
    expected = torch.tensor([100 / 2 - 4 / 6, 0.0, 100 / 2 + 4 / 6, 1.0])
    assert torch.allclose(boxes, expected.expand(5, 4), atol=1e-4)


def test_full_image_crop_without_colour_ops_reproduces_the_image():
    torch.manual_seed(0)
    mc = MultiCrop(global_crops_size=16, global_crops_scale=(1.0, 1.0), local_crops_number=0, local_crops_size=8,
                   ratio=(1.0, 1.0), flip_p=0.0, color_jitter_p=0.0, grayscale_p=0.0, blur_sigma=(1e-3, 1e-3))
    mc.solarize_threshold = 2.0  # never solarise
    image = torch.rand(2, 3, 16, 16)
    crops = mc(image)
    assert torch.allclose(crops[0], image, atol=1e-4) and torch.allclose(crops[1], image, atol=1e-4)


def test_per_sample_ops_by_hand():
    mc = MultiCrop(flip_p=1.0, grayscale_p=1.0)
    x = torch.rand(3, 3, 5, 6)
    assert torch.equal(mc.flip(x), x.flip(-1))
    g = mc.grayscale(x)
    assert torch.allclose(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]) and torch.equal(g[:, 0], g[:, 2])
    pixels = torch.tensor([0.2, 0.7]).view(1, 1, 2, 1).expand(1, 3, 2, 1)
    assert torch.allclose(mc.solarize(pixels, torch.ones(1))[0, :, :, 0], torch.tensor([0.2, 0.3]).expand(3, 2))
    assert torch.equal(mc.solarize(pixels, torch.zeros(1)), pixels)
    assert torch.allclose(gray(torch.ones(1, 3, 2, 2)), torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"local_crops_number": -1}, "data.multicrop.local_crops_number"),
    ({"local_crops_number": 2.5}, "data.multicrop.local_crops_number"),
    ({"global_crops_size": 0}, "data.multicrop.global_crops_size"),
    ({"local_crops_size": 300}, "data.multicrop.local_crops_size"),
    ({"global_crops_scale": [0.4, 1.5]}, "data.multicrop.global_crops_scale"),
    ({"local_crops_scale": [0.4, 0.05]}, "data.multicrop.local_crops_scale"),
])
def test_bad_crop_settings_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        MultiCrop(**kwargs)

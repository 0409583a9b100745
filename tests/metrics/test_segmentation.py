"""FG-ARI, mBO and the colour-std proxy against hand computations."""

from __future__ import annotations

import logging

import pytest
import torch

from featlab.errors import ConfigError
from featlab.metrics.segmentation import (
    SlotSegmentationMetrics,
    adjusted_rand_index,
    masks_to_ids,
    mean_best_overlap,
    position_regions,
    slot_colour_std,
)


def ids(*rows: list[int]) -> torch.Tensor:
    """A (1, H, W) id map from rows."""
    return torch.tensor([list(r) for r in rows]).unsqueeze(0)


def test_fg_ari_is_one_for_a_perfect_segmentation_and_ignores_label_names():
    true = ids([0, 1, 1, 2], [0, 1, 2, 2], [3, 3, 0, 0])
    assert adjusted_rand_index(true, true).item() == pytest.approx(1.0)
    relabelled = torch.tensor([5, 2, 0, 4])[true]  # any bijection of the ids
    assert adjusted_rand_index(true, relabelled).item() == pytest.approx(1.0)
    # background pixels are excluded: predicting anything there does not matter
    noisy_background = torch.where(true == 0, torch.tensor([[7, 8, 9, 6]]).expand(3, 4).unsqueeze(0), true)
    assert adjusted_rand_index(true, noisy_background).item() == pytest.approx(1.0)


def test_fg_ari_matches_a_hand_computed_value():
    """true [1,1,1,2,2,2], pred [1,1,2,2,3,3]: index 2, expected 6*3/15 = 1.2, max 4.5 -> 0.8/3.3 = 8/33."""
    true = ids([1, 1, 1, 2, 2, 2])
    pred = ids([1, 1, 2, 2, 3, 3])
    assert adjusted_rand_index(true, pred).item() == pytest.approx(8 / 33)
    # every foreground pixel in one slot while there are two objects: no better than chance
    assert adjusted_rand_index(true, torch.zeros_like(pred)).item() == pytest.approx(0.0)


def test_fg_ari_degenerate_cases():
    one_object = ids([0, 1, 1, 1])
    assert adjusted_rand_index(one_object, ids([4, 2, 2, 2])).item() == pytest.approx(1.0)
    assert torch.isnan(adjusted_rand_index(ids([0, 0, 0, 1]), ids([0, 1, 2, 3]))).all()  # < 2 fg pixels
    batch = torch.cat([ids([1, 1, 2, 2]), ids([1, 2, 1, 2])])
    pred = torch.cat([ids([3, 3, 4, 4]), ids([3, 3, 4, 4])])
    out = adjusted_rand_index(batch, pred)
    assert out[0].item() == pytest.approx(1.0) and out[1].item() == pytest.approx(-0.5)


def test_mbo_matches_a_hand_example():
    """Object 1 (3 px) vs its best slot (2 px inside + 1 outside): IoU 2/4; object 2 (2 px) exact: 1."""
    true = ids([1, 1, 1, 0], [2, 2, 0, 0])
    pred = ids([5, 5, 6, 5], [7, 7, 6, 6])
    assert mean_best_overlap(true, pred).item() == pytest.approx((0.5 + 1.0) / 2)
    assert mean_best_overlap(true, true).item() == pytest.approx(1.0)
    assert torch.isnan(mean_best_overlap(ids([0, 0]), ids([1, 2]))).all()


def test_colour_std_proxy_by_hand():
    image = torch.zeros(1, 3, 1, 4)
    image[0, :, 0, :] = torch.tensor([0.0, 1.0, 0.5, 0.5])  # grey values, equal in every channel
    pred = ids([0, 0, 1, 1])
    assert slot_colour_std(image, pred).item() == pytest.approx((0.5 + 0.0) / 2)


def test_masks_are_upsampled_before_argmax():
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, :, 0] = 1.0
    masks[0, 1, :, 1] = 1.0
    out = masks_to_ids(masks, (4, 4))
    assert out.shape == (1, 4, 4)
    assert out[0, :, 0].eq(0).all() and out[0, :, 3].eq(1).all()


def test_metric_accumulates_and_warns_when_objects_outnumber_slots(caplog):
    metric = SlotSegmentationMetrics(num_slots=2)
    true = ids([1, 2, 3, 0], [1, 2, 3, 0])
    with caplog.at_level(logging.WARNING):
        metric.update(true, true, torch.rand(1, 3, 2, 4))
        metric.update(torch.zeros_like(true), true, torch.rand(1, 3, 2, 4))  # (prediction, truth)
    assert "task.slots.num_slots" in caplog.text and len(caplog.records) == 1  # warned once
    values = metric.compute()
    assert values["fg_ari"].item() == pytest.approx(0.5)  # (1 + 0) / 2: still computed
    assert set(values) == {"fg_ari", "mbo", "proxy_slot_colour_std"}


def test_size_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="data.masks"):
        adjusted_rand_index(ids([1, 2]), ids([1, 2, 3]))


def test_position_regions_split_the_image_into_k_compact_regions_the_same_every_time():
    regions = position_regions(32, 4)
    assert regions.shape == (32, 32) and sorted(regions.unique().tolist()) == [0, 1, 2, 3]
    assert torch.equal(regions, position_regions(32, 4))                # fixed, not image-dependent
    assert torch.equal(position_regions((8, 16), 1), torch.zeros(8, 16, dtype=torch.long))
    # 4 regions of a square are its quadrants: each region has the area of one, +-10 %
    areas = torch.bincount(regions.flatten(), minlength=4).float()
    assert ((areas - 256).abs() <= 26).all()
    # compact: a region's pixels lie within a quadrant-sized box
    for j in range(4):
        ys, xs = torch.nonzero(regions == j, as_tuple=True)
        assert ys.max() - ys.min() < 20 and xs.max() - xs.min() < 20
    with pytest.raises(ConfigError, match="^task.slots.num_slots"):
        position_regions(4, 17)


def test_fixed_split_scores_above_zero_when_objects_sit_in_different_regions():
    """Why the slots task logs it: one object per quadrant is segmented perfectly by position alone."""
    truth = torch.zeros(1, 32, 32, dtype=torch.long)
    truth[0, 2:8, 2:8], truth[0, 24:30, 24:30] = 1, 2
    regions = position_regions(32, 4)[None]
    assert adjusted_rand_index(truth, regions).item() == pytest.approx(1.0)

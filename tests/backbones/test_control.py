"""The slots positive control's "backbone": patch mean colour + patch position, by name, no weights."""

from __future__ import annotations

import pytest
import torch

from featlab.backbones import available, create
from featlab.backbones.control import CONTROL_NAME
from featlab.config import compose
from featlab.errors import ConfigError


def test_control_returns_each_patch_mean_colour_and_its_centre():
    fx = create(CONTROL_NAME, layers=["last"], pretrained=False)
    image = torch.zeros(1, 3, 128, 128)
    image[0, 0, :8, :8] = 1.0                 # top-left patch: pure red
    image[0, 2, 120:, 120:] = 0.5             # bottom-right patch: half blue
    image[0, 1, :4, 8:16] = 1.0               # second patch of the first row: half of it green
    out = fx(image)["last"]
    assert out.shape == (1, 5, 16, 16) and fx.channels["last"] == 5
    assert out[0, :3, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert out[0, :3, 15, 15].tolist() == [0.0, 0.0, 0.5]
    assert out[0, 1, 0, 1].item() == pytest.approx(0.5)
    assert out[0, 3:, 0, 0].tolist() == pytest.approx([-15 / 16, -15 / 16])   # (y, x) of the cell centre
    assert out[0, 3:, 15, 0].tolist() == pytest.approx([15 / 16, -15 / 16])


def test_control_is_listed_and_has_no_weights_to_load():
    assert CONTROL_NAME in available(include_test=False)
    with pytest.raises(ConfigError, match="pretrained"):
        create(CONTROL_NAME, layers=["last"], pretrained=True, config_key="task.backbone")


def test_slots_control_experiment_builds_on_the_slot_study():
    cfg = compose(["experiment=slots_control"])
    assert cfg.task.backbone.name == CONTROL_NAME and cfg.task.backbone.pretrained is False
    assert cfg.study == "slot_backbones" and cfg.task._target_.endswith("SlotAttentionTask")
    assert cfg.task.slots.num_slots == 11 and cfg.task.mask_source == "attention"
    assert cfg.task.decoder.slot_features == "constant" and cfg.task.decoder.masks_from == "attention"
    assert cfg.trainer.max_steps == 1000 and cfg.trainer.gradient_clip_val == 1.0  # slots_dino's clip kept
    assert compose(["experiment=slots_control", "trainer=cpu"]).trainer.limit_train_batches == 4

"""Folder DataModules name their missing keys; the embedded defaults need none (they make their data)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from featlab.config import compose
from featlab.data.build import REQUIRED_KEY, build_datamodule
from featlab.errors import ConfigError

EMBEDDED = ["sr_embedded", "faces_synthetic", "scenes_embedded", "dino_embedded"]
FOLDERS = {"sr_folders": "train_dirs", "faces_folder": "root", "scenes_folder": "root",
           "dino_folders": "train_root"}


@pytest.mark.parametrize("data", EMBEDDED)
def test_embedded_defaults_require_nothing_the_user_must_set(data):
    cfg = compose([f"data={data}"]).data
    for name in cfg.get(REQUIRED_KEY) or []:
        assert not OmegaConf.is_missing(cfg, name) and cfg.get(name) is not None, (data, name)


@pytest.mark.parametrize(("data", "key"), sorted(FOLDERS.items()))
def test_folder_data_without_its_folder_is_one_line_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=rf"^data\.{key}: is required"):
        build_datamodule(compose([f"data={data}"]).data)

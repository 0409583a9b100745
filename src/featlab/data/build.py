"""Building a DataModule from its config, with the config's required keys enforced.

OmegaConf keeps a base config's value when a derived one says ``???`` (``data=sr_folders`` builds on
``sr_embedded``), so "required" cannot be spelled ``???`` there: a forgotten ``data.val_dirs``
silently validated on the built-in photos. A data config lists its required keys under
``required:`` instead; a missing or null one is one line naming it.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from featlab.errors import ConfigError

REQUIRED_KEY = "required"


def build_datamodule(data_cfg: DictConfig, key: str = "data") -> Any:
    """``instantiate(cfg.data)`` after checking ``cfg.data.required``."""
    required = list(data_cfg.get(REQUIRED_KEY) or [])
    for name in required:
        if OmegaConf.is_missing(data_cfg, name) or data_cfg.get(name) is None:
            choice = data_cfg.get("_target_", "this data module")
            raise ConfigError(f"{key}.{name}", f"is required by {choice}; set it on the command line "
                                               f"({key}.{name}=...)")
    cfg = data_cfg
    if REQUIRED_KEY in data_cfg:
        cfg = data_cfg.copy()
        with open_dict(cfg):
            del cfg[REQUIRED_KEY]
    try:
        return instantiate(cfg)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{key}.{err.full_key}" if err.full_key else key, "is required (it is ???)") from None

"""Composing the Hydra config tree outside ``@hydra.main`` (tests, eval, tools)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from featlab.errors import ConfigError, unknown_name


def short_dirname(text: str, limit: int = 120) -> str:
    """Readable job folder names under the 255-byte file-name limit (a hash keeps them unique)."""
    if len(text) <= limit:
        return text
    return text[: limit - 9] + "~" + hashlib.sha1(text.encode()).hexdigest()[:8]


OmegaConf.register_new_resolver("short_dirname", short_dirname, replace=True)


def config_dir() -> Path:
    """The ``conf/`` tree: ``$FEATLAB_CONF`` if set, else the one beside the source checkout."""
    env = os.environ.get("FEATLAB_CONF")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "train.yaml").exists():
        raise ConfigError("FEATLAB_CONF", f"no Hydra config tree (train.yaml) at '{path}'")
    return path


def compose(overrides: list[str] | None = None, config_name: str = "train",
            return_hydra_config: bool = False) -> DictConfig:
    """Compose ``config_name`` with command-line style overrides, as ``train.py`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []),
                             return_hydra_config=return_hydra_config)


def check_config_choices(overrides: list[str]) -> None:
    """Unknown config-group options (``experiment=nope``, ``net=espcn,nope``) as one ConfigError line.

    Hydra reports them only after composing, as a multi-line message with its search path; this
    check runs first and names the group and its valid options. Sweep functions (``choice(...)``,
    ``glob(...)``) and ``null`` are left to Hydra.
    """
    root = config_dir()
    for override in overrides:
        if "=" not in override:
            continue
        key, value = override.split("=", 1)
        group = key.lstrip("+~")
        folder = root / group
        if "@" in group or "(" in value or not folder.is_dir():
            continue
        valid = sorted(p.stem for p in folder.glob("*.yaml"))
        for option in (v.strip() for v in value.split(",")):
            if option and option != "null" and option not in valid:
                raise unknown_name(group, option, valid, f"{group} config")

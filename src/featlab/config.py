"""Configs as data: composing the Hydra tree outside ``@hydra.main`` (tests, eval, tools), plain
containers for hyper-parameters, and instantiating ``_target_`` configs with readable errors."""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from featlab.errors import ConfigError, unknown_name, user_error_in
from featlab.overrides import non_identifying_keys


def to_plain(cfg: Any) -> Any:
    """Resolved plain containers: hyper-parameters must pickle and log without OmegaConf."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def build(cfg: Mapping | None, **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` config (``None`` stays ``None``).

    Hydra wraps whatever the constructor raised in its InstantiationException; a ConfigError
    inside is re-raised as itself, so a bad value reads as the one line naming its key.
    """
    if cfg is None:
        return None
    try:
        return instantiate(OmegaConf.create(to_plain(cfg)), **kwargs)
    except Exception as err:
        cause = user_error_in(err, (ConfigError,))
        if cause is not None and cause is not err:
            raise cause from None
        raise


def short_dirname(text: str, limit: int = 120) -> str:
    """Readable job folder names under the 255-byte file-name limit (a hash keeps them unique)."""
    if len(text) <= limit:
        return text
    return text[: limit - 9] + "~" + hashlib.sha1(text.encode()).hexdigest()[:8]


OmegaConf.register_new_resolver("short_dirname", short_dirname, replace=True)
OmegaConf.register_new_resolver("non_identifying_keys", non_identifying_keys, replace=True)


@functools.cache
def process_suffix() -> str:
    """Part of default run-dir names that two processes never share (pid + random bits), fixed for
    the process so every resolution of ``hydra.run.dir`` agrees."""
    return f"{os.getpid():x}{secrets.token_hex(3)}"


OmegaConf.register_new_resolver("process_suffix", process_suffix, replace=True)


CONFIG_PACKAGE = "featlab.conf"


def config_source() -> str:
    """Where Hydra reads the primary configs: ``pkg://featlab.conf`` (the configs ship inside the
    package, so an installed wheel trains from any directory), or ``$FEATLAB_CONF`` if set."""
    env = os.environ.get("FEATLAB_CONF")
    return str(config_dir()) if env else f"pkg://{CONFIG_PACKAGE}"


def config_dir() -> Path:
    """The config tree on disk: ``$FEATLAB_CONF`` if set, else the packaged ``featlab/conf``."""
    env = os.environ.get("FEATLAB_CONF")
    path = Path(env).resolve() if env else Path(str(importlib.resources.files(CONFIG_PACKAGE)))
    if not (path / "train.yaml").exists():
        raise ConfigError("FEATLAB_CONF", f"no Hydra config tree (train.yaml) at '{path}'")
    return path


def user_config_dirs(argv: list[str]) -> list[Path]:
    """The user's own config folders of a command line: ``--config-dir``/``-cd`` and ``hydra.searchpath``.

    Hydra searches them after the packaged configs, so they add experiments (``experiment=mine``)
    but cannot replace a packaged file of the same name. A missing folder is a ConfigError; a file
    that a packaged one shadows is named on stderr (it would be silently ignored otherwise).
    """
    found: list[tuple[str, str]] = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            found.append(("--config-dir", argv[i + 1]))
        elif arg.startswith(("--config-dir=", "-cd=")):
            found.append(("--config-dir", arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            items = arg.split("=", 1)[1].strip().strip("[]")
            for item in filter(None, (x.strip().strip("'\"") for x in items.split(","))):
                if not item.startswith("pkg://"):
                    found.append(("hydra.searchpath", item.removeprefix("file://")))
    dirs = []
    packaged = config_dir()
    for key, text in found:
        path = Path(text).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(key, f"user config dir '{text}' does not exist")
        shadowed = sorted(str(p.relative_to(path)) for p in path.rglob("*.yaml")
                          if (packaged / p.relative_to(path)).exists())
        if shadowed:
            print(f"featlab: warning: user config dir '{text}': {', '.join(shadowed)} ignored, the packaged "
                  "config of the same name comes first (rename yours to use it)", file=sys.stderr)
        dirs.append(path)
    return dirs


def compose(overrides: list[str] | None = None, config_name: str = "train",
            return_hydra_config: bool = False) -> DictConfig:
    """Compose ``config_name`` with command-line style overrides, as ``train.py`` would.

    ``hydra.searchpath=[dir]`` among the overrides adds a user config folder, as for training.
    """
    GlobalHydra.instance().clear()
    source = config_source()
    if source.startswith("pkg://"):
        init = initialize_config_module(CONFIG_PACKAGE, version_base="1.3")
    else:
        init = initialize_config_dir(config_dir=source, version_base="1.3")
    with init:
        return hydra_compose(config_name=config_name, overrides=list(overrides or []),
                             return_hydra_config=return_hydra_config)


def check_config_choices(overrides: list[str], extra_dirs: list[Path] | None = None) -> None:
    """Unknown config-group options (``experiment=nope``, ``net=espcn,nope``) as one ConfigError line.

    Hydra reports them only after composing, as a multi-line message with its search path; this
    check runs first and names the group and its valid options. Sweep functions (``choice(...)``,
    ``glob(...)``) and ``null`` are left to Hydra.
    """
    roots = [config_dir(), *(extra_dirs or [])]
    for override in overrides:
        if "=" not in override or override.startswith("-"):
            continue
        key, value = override.split("=", 1)
        group = key.lstrip("+~")
        folders = [root / group for root in roots if (root / group).is_dir()]
        if "@" in group or "(" in value or not folders or group.startswith("hydra."):
            continue
        valid = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
        for option in (v.strip() for v in value.split(",")):
            if option and option != "null" and option not in valid:
                raise unknown_name(group, option, valid, f"{group} config")


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_sweeper_storage(argv: list[str]) -> None:
    """``hydra.sweeper.storage=sqlite:///...`` works only where Optuna can reach its database.

    hydra-optuna-sweeper allows Optuna 2 only, whose database storage predates SQLAlchemy 2 (it
    fails deep inside Optuna with a bare AssertionError). Said here as one line, before any job runs.
    """
    given = [arg.split("=", 1)[1] for arg in argv if arg.lstrip("+").startswith("hydra.sweeper.storage=")]
    if not given or given[-1].strip("'\"") in ("", "null"):
        return
    optuna, sqlalchemy = package_version("optuna"), package_version("sqlalchemy")
    if optuna and sqlalchemy and int(optuna.split(".")[0]) < 3 and int(sqlalchemy.split(".")[0]) >= 2:
        raise ConfigError("hydra.sweeper.storage", f"Optuna {optuna} (the newest hydra-optuna-sweeper allows) cannot "
                          f"use SQLAlchemy {sqlalchemy}: pip install 'sqlalchemy<2' (as featlab's [sweeps] extra "
                          "does), or leave the storage null")

"""featlab's checkpoint files: plain data only, loaded without ever running code from them.

A checkpoint is a pickle, and a pickle can call any function while it loads (``os.system``
included). So every featlab reader goes through :func:`load_checkpoint`, which uses
``torch.load(weights_only=True)``: tensors, numbers, strings, lists, tuples and dicts only. A file
that needs more (custom classes, OmegaConf objects, a payload) is refused with one line; nothing
retries with the full unpickler. Featlab's own checkpoints are written to pass: hyper-parameters
become plain containers (:func:`plain_data`) before saving, and :class:`SafeCheckpointIO` makes
Lightning save atomically and resume through the same loader, whatever Lightning version is
installed (``Trainer.fit`` has no ``weights_only`` argument before Lightning 2.6).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO
from omegaconf import OmegaConf

from featlab.errors import ConfigError
from featlab.files import atomic_open

HPARAMS_TYPE_KEY = "hparams_type"  # Lightning stores the hparams' class here when it is an OmegaConf node


def plain_data(obj: Any) -> Any:
    """``obj`` with every OmegaConf node turned into plain dicts/lists (interpolations resolved
    where they can be, kept as strings where they point outside the node)."""
    if OmegaConf.is_config(obj):
        try:
            return OmegaConf.to_container(obj, resolve=True)
        except Exception:  # an interpolation into the parent config that this node no longer sees
            return OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, Mapping):
        return {key: plain_data(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        items = [plain_data(value) for value in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj


def make_loadable(checkpoint: dict) -> dict:
    """Turn what Lightning dumped into plain data, in place (called from the task's save hook)."""
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if key in checkpoint:
            checkpoint[key] = plain_data(dict(checkpoint[key]))
    checkpoint.pop(HPARAMS_TYPE_KEY, None)
    checkpoint.pop("datamodule_" + HPARAMS_TYPE_KEY, None)
    return checkpoint


def _forbidden_global(err: Exception) -> str | None:
    """The class or function a refused pickle wanted (e.g. ``posix.system``), or None if the file
    was simply broken."""
    match = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
    return match.group(1) if match else None


def load_checkpoint(path: str | Path, key: str = "ckpt_path", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a missing, corrupt or code-carrying file is a
    :class:`ConfigError` naming ``key`` (one line, nothing executed)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(key, f"checkpoint '{path}' does not exist" if not path.exists()
                          else f"'{path}' is not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        forbidden = _forbidden_global(err)
        if forbidden is None:  # a broken pickle, not a refused one
            raise ConfigError(key, f"'{path}' is not a readable torch checkpoint (corrupt pickle data)") from None
        raise ConfigError(key, f"refusing '{path}': loading it would run code from the file (it references "
                               f"{forbidden}); "
                               "featlab loads only plain tensors and containers (weights_only=True). If you "
                               "trust it, re-save its tensors with torch.save(state_dict)") from None
    except Exception as err:  # truncated, corrupt, not a torch file at all
        first = (str(err).splitlines() or [""])[0][:200]
        raise ConfigError(key, f"'{path}' is not a readable torch checkpoint ({type(err).__name__}: {first})") from None


def save_checkpoint(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def is_loadable(path: str | Path) -> bool:
    """Whether ``path`` is an intact, safe checkpoint (used to skip corrupt ones when resuming)."""
    try:
        return isinstance(load_checkpoint(path), Mapping)
    except ConfigError:
        return False


class SafeCheckpointIO(CheckpointIO):
    """Lightning's checkpoint reads and writes, made safe: atomic saves and weights-only loads.

    Passed to the Trainer as a plugin, it covers ``ModelCheckpoint``, ``trainer.save_checkpoint``,
    ``fit(ckpt_path=...)`` and ``test(ckpt_path=...)``. ``weights_only`` is accepted (Lightning
    >= 2.6 passes it) and ignored: loading is always weights-only.
    """

    def __init__(self, key: str = "ckpt_path") -> None:
        self.key = key

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        loaded = load_checkpoint(path, self.key, map_location="cpu" if map_location is None else map_location)
        if not isinstance(loaded, Mapping):
            raise ConfigError(self.key, f"'{path}' is not a Lightning checkpoint (it holds a {type(loaded).__name__})")
        return dict(loaded)

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)

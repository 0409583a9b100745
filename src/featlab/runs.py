"""Run directories: unique names, one process at a time, and which checkpoint a resume starts from.

``ckpt_path=last`` means "continue this run": the newest intact checkpoint of a run dir whose
stored config is this run's config. A finished run is refused unless the new config extends it
(more epochs or steps); a corrupt ``last.ckpt`` falls back to the newest intact checkpoint beside
it, with a warning naming both. Every refusal is one :class:`ConfigError` line naming ``ckpt_path``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featlab.checkpoints import load_checkpoint
from featlab.errors import ConfigError
from featlab.files import remove_stale_temp_files

log = logging.getLogger("featlab")

LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
# Top-level keys that say where or how long a run goes, not what it is: a resume may change them.
NOT_IDENTITY = ("hydra", "paths", "tags", "trainer", "logger", "ckpt_path", "callbacks", "overrides", "run_name",
                "test_after_fit", "compile", "study")
NOT_IDENTITY_KEYS = ("data.num_workers", "data.pin_memory", "data.persistent_workers")


# -- the lock ---------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _is_rank_zero() -> bool:
    return all(os.environ.get(var, "0") == "0" for var in ("LOCAL_RANK", "RANK", "NODE_RANK"))


class RunLock:
    """``run_dir/.lock`` holding ``pid host``: a second process on the same run dir refuses to start.

    A lock whose pid is dead on this host is stale (SIGKILL, OOM, a node reboot) and is taken over.
    Only rank 0 takes it: DDP ranks > 0 run in the same dir on purpose.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        if not _is_rank_zero():
            return self
        host, me = socket.gethostname(), os.getpid()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue
                pid, owner_host = holder
                if pid == me and owner_host == host:
                    self.held = True
                    return self
                if owner_host == host and not _pid_alive(pid):
                    log.warning("run dir %s: taking over the stale lock of process %d (no longer running)",
                                self.path.parent, pid)
                    self.path.unlink(missing_ok=True)
                    continue
                raise ConfigError("hydra.run.dir", f"run dir '{self.path.parent}' is in use by process {pid} on "
                                  f"{owner_host} (lock {self.path}); wait for it, or choose another dir") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{me} {host}\n")
            self.held = True
            return self
        raise ConfigError("hydra.run.dir", f"could not take the lock {self.path}")

    def _holder(self) -> tuple[int, str] | None:
        try:
            pid, host = self.path.read_text().split()[:2]
            return int(pid), host
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # torn or foreign content: treat as stale
            return -1, socket.gethostname()

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder is not None and holder[0] == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- which checkpoint to resume ---------------------------------------------------------------------
def _flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(cfg, Mapping):
        out: dict[str, Any] = {}
        for key, value in cfg.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): cfg}


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: stored -> current`` for every identity key that differs (where/how-long keys ignored)."""
    a = {k: v for k, v in _flat({k: v for k, v in stored.items() if k not in NOT_IDENTITY}).items()
         if not k.startswith(NOT_IDENTITY_KEYS)}
    b = {k: v for k, v in _flat({k: v for k, v in current.items() if k not in NOT_IDENTITY}).items()
         if not k.startswith(NOT_IDENTITY_KEYS)}
    return [f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}"
            for key in sorted(set(a) | set(b)) if a.get(key, "<absent>") != b.get(key, "<absent>")]


def training_done(checkpoint: Mapping[str, Any], max_epochs: int | None, max_steps: int | None) -> bool:
    """Whether ``checkpoint`` already reached the end that ``max_epochs``/``max_steps`` set."""
    if max_steps is not None and max_steps > 0 and int(checkpoint.get("global_step", 0)) >= max_steps:
        return True
    if max_epochs is None or max_epochs < 0:
        return False
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs = int(((fit.get("epoch_progress") or {}).get("current") or {}).get("processed", 0))
    last_batch = bool((fit.get("epoch_loop.batch_progress") or {}).get("is_last_batch", False))
    finished_epochs = epochs if last_batch else max(0, epochs - 1)
    return finished_epochs >= max_epochs and (max_steps is None or max_steps <= 0 or last_batch)


@dataclass
class Resume:
    path: Path
    checkpoint: dict
    run_dir: Path


def _candidates(folder: Path) -> list[Path]:
    """``last.ckpt`` first, then the other checkpoints newest first."""
    if not folder.is_dir():
        return []
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != LAST), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    last = folder / LAST
    return ([last] if last.is_file() else []) + others


def newest_intact(folder: Path, wanted: Path | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``folder`` that loads, warning when ``wanted`` (or last.ckpt) did not."""
    first_error: str | None = None
    first = wanted
    paths = _candidates(folder)
    if wanted is not None:
        paths = [wanted, *[p for p in paths if p.resolve() != wanted.resolve()]]
    for path in paths:
        try:
            checkpoint = load_checkpoint(path)
        except ConfigError as err:
            if "refusing" in str(err):  # a file that wants to run code is not "corrupt": never skip it silently
                raise
            if first_error is None:
                first, first_error = path, str(err)
            continue
        if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
            first_error = first_error or f"ckpt_path: '{path}' is not a training checkpoint"
            first = first or path
            continue
        if first_error is not None:
            log.warning("ckpt_path: %s is unreadable (%s); resuming from %s, the newest intact checkpoint",
                        first, first_error.split(": ", 1)[-1], path)
        return path, dict(checkpoint)
    if first_error is not None:
        raise ConfigError("ckpt_path", f"no intact checkpoint to resume from: {first_error.split(': ', 1)[-1]}")
    return None


def resolve_resume(ckpt_path: str | None, run_dir: Path, output_root: Path, study: str,
                   config: Mapping[str, Any], max_epochs: int | None, max_steps: int | None) -> Resume | None:
    """The checkpoint this run starts from (None: from scratch), checked against the run's config."""
    if not ckpt_path:
        return None
    if str(ckpt_path) != "last":
        wanted = Path(ckpt_path).expanduser()
        if not wanted.exists():
            raise ConfigError("ckpt_path", f"checkpoint '{wanted}' does not exist")
        found = newest_intact(wanted.parent, wanted)
        assert found is not None
        path, checkpoint = found
        _check_task(checkpoint, config, path)
        return Resume(path, checkpoint, run_dir)
    # ckpt_path=last: this run dir, else the newest run dir of the study trained with this config
    dirs = [run_dir] + sorted(
        (p.parent.parent for p in (output_root / study).glob(f"**/{CHECKPOINT_DIR}/*.ckpt")
         if p.parent.parent.resolve() != run_dir.resolve()),
        key=lambda d: max((c.stat().st_mtime for c in (d / CHECKPOINT_DIR).glob("*.ckpt")), default=0),
        reverse=True)
    mismatch: str | None = None
    seen: set[Path] = set()
    for directory in dirs:
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        remove_stale_temp_files(directory / CHECKPOINT_DIR)
        found = newest_intact(directory / CHECKPOINT_DIR)
        if found is None:
            continue
        path, checkpoint = found
        differences = config_differences(checkpoint.get("featlab_config") or {}, config)
        if differences:
            mismatch = mismatch or f"{path} was trained with another config ({'; '.join(differences[:3])})"
            continue
        if training_done(checkpoint, max_epochs, max_steps):
            raise ConfigError("ckpt_path", f"{path} already finished this run ({checkpoint.get('epoch', 0) + 1} "
                              f"epochs, {checkpoint.get('global_step')} steps); to train longer raise "
                              "trainer.max_epochs (or trainer.max_steps)")
        return Resume(path, checkpoint, directory)
    where = f"'{run_dir}' or '{output_root / study}'"
    if mismatch:
        raise ConfigError("ckpt_path", f"ckpt_path=last found no checkpoint of this config in {where}; newest: "
                                       f"{mismatch}")
    raise ConfigError("ckpt_path", f"ckpt_path=last found no checkpoint in {where}; give the checkpoint's "
                                   "path instead")


def _check_task(checkpoint: Mapping[str, Any], config: Mapping[str, Any], path: Path) -> None:
    """A checkpoint of another task or network (a DINO checkpoint for an SR run) is one line."""
    stored = checkpoint.get("featlab_config") or {}
    for key in ("task", "net"):
        want = ((config.get(key) or {}) if isinstance(config.get(key), Mapping) else {}).get("_target_")
        have = ((stored.get(key) or {}) if isinstance(stored.get(key), Mapping) else {}).get("_target_")
        if have and want and have != want:
            raise ConfigError("ckpt_path", f"{path} holds a {key} {have}, but this run builds {want}")


def check_state_fits(checkpoint: Mapping[str, Any], module_state: Mapping[str, Any], path: Path,
                     ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Compare key sets and shapes before Lightning's strict load prints a 40-line traceback."""
    stored = {k: v for k, v in (checkpoint.get("state_dict") or {}).items() if not k.startswith(ignore_prefixes)}
    wanted = {k: v for k, v in module_state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(wanted) - set(stored))
    unexpected = sorted(set(stored) - set(wanted))
    shapes = sorted(k for k in set(stored) & set(wanted)
                    if hasattr(stored[k], "shape") and tuple(stored[k].shape) != tuple(wanted[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{label} {len(keys)} (e.g. {keys[0]})" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
        raise ConfigError("ckpt_path", f"{path} does not fit this run's model: {'; '.join(parts)}")

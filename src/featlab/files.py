"""Every file featlab writes goes through here: written whole or not at all.

A pre-empted job, a full scratch disk or a read-only mount must never leave a half-written
``last.ckpt`` or a 0-byte ``results.json`` where a good one was. So each writer fills a temp file
in the target's own directory (same filesystem, so the final rename is atomic), flushes and fsyncs
it, then renames it over the target. On any failure the temp file is removed and the previous
version stays as it was; a disk or permission problem becomes one :class:`WriteError` line that
names the path and the free space.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from featlab.errors import ConfigError

TEMP_SUFFIX = ".partial"
# Errors a user fixes on the machine, not in the code: each becomes one line naming the path.
_USER_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EISDIR,
                errno.ENOTDIR, errno.EEXIST}


class WriteError(ConfigError):
    """A file could not be written (disk full, read-only, a file in the way); earlier versions are intact."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(None, f"cannot write '{path}': {message}")


def free_space(path: str | Path) -> str:
    """Human-readable free space of the filesystem holding ``path`` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def _explain(err: OSError, path: Path) -> WriteError:
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the filesystem is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "a folder of that name is in the way",
        errno.ENOTDIR: "a parent of it is a file, not a folder",
        errno.EEXIST: "a file is in the way of its folder",
    }.get(err.errno or 0, err.strerror or str(err))
    return WriteError(path, f"{reason} ({free_space(path.parent)} free on its filesystem); "
                            "any previous version of the file is intact")


def ensure_dir(path: str | Path) -> Path:
    """``mkdir -p`` with one-line errors (a file in the way, read-only, no space)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file where a folder should be
        raise WriteError(path, "a file of that name is in the way of the folder") from err
    except OSError as err:
        if err.errno in _USER_ERRNOS:
            raise _explain(err, path) from err
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every filesystem allows opening a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):  # a filesystem that cannot sync folders keeps the rename anyway
            os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error, it becomes ``path``.

    For writers that insist on a file name (ONNX export, PIL with its own format logic): they write
    the temp path, we fsync and rename it.
    """
    target = Path(path)
    if target.is_dir():
        raise WriteError(target, "a folder of that name is in the way")
    ensure_dir(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
        os.close(fd)
    except OSError as err:
        raise _explain(err, target) from err
    tmp = Path(tmp_name)
    try:
        # mkstemp makes 0600 files; give the result the mode a plain open() would (or the old file's)
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        _replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in _USER_ERRNOS:
            raise _explain(err, target) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


# Test-only fault hook (featlab.callbacks.faults): called with (temp, target) between the write and
# the rename. None in every normal run.
BEFORE_COMMIT: Callable[[Path, Path], None] | None = None


def _replace(tmp: Path, target: Path) -> None:
    """The commit point (a separate function so tests can crash exactly between write and rename)."""
    if BEFORE_COMMIT is not None:
        BEFORE_COMMIT(tmp, target)
    os.replace(tmp, target)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose content replaces ``path`` only if the block completes."""
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as handle:
        yield handle
        handle.flush()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("default", str)
    return write_text(path, json.dumps(obj, **kwargs) + "\n")


def write_with(path: str | Path, writer: Callable[[IO[bytes]], Any]) -> Path:
    """``writer(buffer)`` fills memory first, then one atomic write: for ``torch.save``, ``Image.save``."""
    buffer = io.BytesIO()
    writer(buffer)
    return write_bytes(path, buffer.getvalue())


def save_image(image: Any, path: str | Path, **kwargs: Any) -> Path:
    """``PIL.Image.save`` atomically; the format comes from ``path``'s suffix as PIL would choose it."""
    from PIL import Image

    target = Path(path)
    fmt = kwargs.pop("format", None) or Image.registered_extensions().get(target.suffix.lower())
    if fmt is None:
        raise WriteError(target, f"unknown image suffix '{target.suffix}' (use .png, .jpg, .tif, ...)")
    with atomic_path(target) as tmp:
        image.save(tmp, format=fmt, **kwargs)
    return target


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """``matplotlib Figure.savefig`` atomically (format from the suffix)."""
    target = Path(path)
    kwargs.setdefault("format", target.suffix.lstrip(".") or "png")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, **kwargs)
    return target


def append_text(path: str | Path, text: str) -> Path:
    """Append ``text`` atomically: the old content plus the new lines replace the file together."""
    target = Path(path)
    old = target.read_bytes() if target.is_file() else b""
    return write_bytes(target, old + text.encode("utf-8"))


def stale_temp_files(directory: str | Path) -> list[Path]:
    """Temp files left by a writer that was killed (SIGKILL between write and rename)."""
    directory = Path(directory)
    return sorted(directory.glob(f".*{TEMP_SUFFIX}")) if directory.is_dir() else []


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete what :func:`stale_temp_files` finds (only our own ``.name.XXXX.partial`` files)."""
    removed = []
    for tmp in stale_temp_files(directory):
        with suppress(OSError):  # gone already, or not ours to delete: leave it, report the rest
            tmp.unlink()
            removed.append(tmp)
    return removed


def disk_usage(directory: str | Path) -> int:
    """Bytes used by the files under ``directory`` (what a run costs on disk)."""
    total = 0
    for root, _, names in os.walk(directory):
        for name in names:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total

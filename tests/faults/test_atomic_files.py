"""Every featlab writer under a failing disk: full (ENOSPC), read-only (EROFS), or a crash between
the write and the rename. The previous version of each file must stay readable, no temp file may be
left behind, and the error is one line naming the path and the free space."""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from featlab import files
from featlab.checkpoints import load_checkpoint, save_checkpoint
from featlab.errors import ConfigError
from featlab.files import WriteError, save_figure, save_image, write_json, write_text
from featlab.loggers import AppendingCSVWriter


def _checkpoint(path: Path, value: float) -> None:
    save_checkpoint({"state_dict": {"w": torch.full((4,), value)}}, path)


def _json(path: Path, value: float) -> None:
    write_json(path, {"status": "finished", "value": value})


def _csv(path: Path, value: float) -> None:
    writer = AppendingCSVWriter(str(path.parent))
    writer.log_metrics({"loss": value}, step=int(value))
    writer.save()


def _image(path: Path, value: float) -> None:
    save_image(Image.new("RGB", (4, 4), (int(value), 0, 0)), path)


def _figure(path: Path, value: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    fig.gca().plot([0, value])
    save_figure(fig, path)
    plt.close(fig)


def _read(path: Path):
    if path.suffix == ".ckpt":
        return float(load_checkpoint(path)["state_dict"]["w"][0])
    if path.suffix == ".json":
        return json.loads(path.read_text())["value"]
    if path.suffix == ".csv":
        return [row["loss"] for row in csv.DictReader(path.open())]
    with Image.open(path) as img:
        img.load()
        return img.size


WRITERS = {"last.ckpt": _checkpoint, "results.json": _json, "metrics.csv": _csv, "sr.png": _image,
           "plot.png": _figure}


def _fail_with(code: int):
    def fail(tmp: Path, target: Path) -> None:
        raise OSError(code, "simulated")
    return fail


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS", "crash"])
def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, name, fault):
    path = tmp_path / name
    WRITERS[name](path, 1.0)
    before = _read(path)
    if fault == "crash":  # the process dies between the write and the rename
        def crash(tmp: Path, target: Path) -> None:
            raise KeyboardInterrupt
        monkeypatch.setattr(files, "BEFORE_COMMIT", crash)
        with pytest.raises(KeyboardInterrupt):
            WRITERS[name](path, 2.0)
    else:
        monkeypatch.setattr(files, "BEFORE_COMMIT", _fail_with(getattr(errno, fault)))
        with pytest.raises(WriteError) as info:
            WRITERS[name](path, 2.0)
        message = str(info.value)
        assert str(path) in message and "free" in message and "\n" not in message
        assert ("no space left" if fault == "ENOSPC" else "read-only") in message
    assert _read(path) == before
    assert not list(tmp_path.glob(".*.partial"))


def test_disk_full_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    """ENOSPC from the write itself (not the rename): the half-written temp file is removed."""
    path = write_text(tmp_path / "report.md", "old\n")

    def write_then_fail(buffer) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match="no space left"), files.atomic_open(path, "wb") as handle:
        handle.write(b"partial")
        write_then_fail(handle)
    assert path.read_text() == "old\n" and not list(tmp_path.glob(".*.partial"))


def test_files_keep_normal_permissions(tmp_path):
    path = write_text(tmp_path / "results.json", "{}")
    assert path.stat().st_mode & 0o044 == 0o044  # readable by group/others like any plain write


def test_a_file_or_folder_in_the_way_is_one_line(tmp_path):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(WriteError, match="in the way"):
        write_text(tmp_path / "blocker" / "out.json", "{}")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(WriteError, match="folder of that name"):
        write_text(tmp_path / "dir.png", "x")


def test_a_full_disk_during_training_is_recorded_as_failed(train_run, tmp_path, monkeypatch):
    """The checkpoint save hits ENOSPC: the run stops with one line, results.json says failed."""
    real = files._replace

    def no_space_for_checkpoints(tmp: Path, target: Path) -> None:
        if target.suffix == ".ckpt":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, target)

    monkeypatch.setattr(files, "_replace", no_space_for_checkpoints)
    with pytest.raises(ConfigError) as info:
        train_run(["experiment=sisr_l1", "net=espcn", "data.hr_crop=16", "data.batch_size=2", "data.repeat=1",
                   "data.val_max_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                   "trainer.limit_val_batches=1", "test_after_fit=false"])
    assert "no space left" in str(info.value) and ".ckpt" in str(info.value)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "no space left" in results["error"]
    assert not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))

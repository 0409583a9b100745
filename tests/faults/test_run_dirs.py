"""Run directories: one process at a time, names that cannot collide, and what ckpt_path=last accepts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featlab.config import compose
from featlab.errors import ConfigError
from featlab.runs import LOCK_FILE, RunLock, config_differences, newest_intact

TINY = ["experiment=sisr_l1", "net=espcn", "data.hr_crop=16", "data.batch_size=2", "data.repeat=1",
        "data.val_max_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "test_after_fit=false"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_on_a_run_dir_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(f"{holder.pid} {socket.gethostname()}\n")
        with pytest.raises(ConfigError, match=rf"in use by process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_released(tmp_path):
    (tmp_path / LOCK_FILE).write_text(f"{_dead_pid()} {socket.gethostname()}\n")
    lock = RunLock(tmp_path).acquire()
    assert lock.held and (tmp_path / LOCK_FILE).read_text().split()[0] == str(__import__("os").getpid())
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_locked_run_dir_refuses_training_without_touching_it(train_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK_FILE).write_text(f"{holder.pid} {socket.gethostname()}\n")
        with pytest.raises(ConfigError, match="in use by process"):
            train_run(TINY, run_dir=run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # no results.json of ours in it
    finally:
        holder.kill()
        holder.wait()


def test_default_run_dir_names_differ_between_processes_started_together():
    code = ("from featlab.config import compose; "
            "print(compose(['study=x'], return_hydra_config=True).hydra.run.dir)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
             for _ in range(2)]
    dirs = [proc.communicate(timeout=120)[0].strip().splitlines()[-1] for proc in procs]
    assert len(set(dirs)) == 2 and all("/x/" in d for d in dirs)
    assert len({compose([], return_hydra_config=True).hydra.run.dir.rsplit("-", 1)[-1] for _ in range(2)}) == 1


def test_config_differences_ignore_where_and_how_long():
    stored = {"seed": 0, "task": {"optim": {"lr": 1e-3}}, "trainer": {"max_epochs": 3}, "data": {"num_workers": 2}}
    same = {"seed": 0, "task": {"optim": {"lr": 1e-3}}, "trainer": {"max_epochs": 9}, "data": {"num_workers": 0}}
    other = {"seed": 0, "task": {"optim": {"lr": 5e-3}}, "trainer": {"max_epochs": 3}, "data": {"num_workers": 2}}
    assert config_differences(stored, same) == []
    assert config_differences(stored, other) == ["task.optim.lr: 0.001 -> 0.005"]


def test_a_corrupt_last_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"state_dict": {"w": torch.ones(1)}, "global_step": 4}, folder / "best-000.ckpt")
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    path, checkpoint = newest_intact(folder)
    assert path.name == "best-000.ckpt" and checkpoint["global_step"] == 4
    assert "last.ckpt" in caplog.text and "best-000.ckpt" in caplog.text
    (folder / "best-000.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="^ckpt_path: no intact checkpoint"):
        newest_intact(folder)


@pytest.mark.slow
def test_resume_refusals_are_one_line(train_run, tmp_path):
    results, run_dir = train_run(TINY)
    assert results["status"] == "finished"
    with pytest.raises(ConfigError, match="^ckpt_path: .*another config .*task.optim.lr"):
        train_run([*TINY, "task.optim.lr=0.005", "trainer.max_epochs=2", "ckpt_path=last"], run_dir=run_dir)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train_run(TINY, run_dir=run_dir)  # a fresh start never overwrites an earlier run
    with pytest.raises(ConfigError, match="^trainer.max_epochs: must be a whole number"):
        train_run([*TINY, "trainer.max_epochs=abc"], run_dir=tmp_path / "other")
    dino = ["experiment=dino_resnet18", "pretrained=false", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1", "test_after_fit=false", "data.batch_size=4",
            "task.scheduler.warmup_epochs=0"]
    dino_results, dino_dir = train_run(dino, run_dir=tmp_path / "dino")
    assert dino_results["status"] == "finished"
    with pytest.raises(ConfigError, match="^ckpt_path: .*(holds a task|does not fit)"):
        train_run([*TINY, f"ckpt_path={dino_dir / 'checkpoints' / 'last.ckpt'}"], run_dir=tmp_path / "sr")


@pytest.mark.slow
def test_checkpoints_leave_frozen_backbones_out(train_run, tmp_path):
    """ESPCN with a DINO-style perceptual loss: the checkpoint holds the net, not the loss backbone."""
    results, run_dir = train_run(["experiment=sisr_dino", "net=espcn", "loss.perceptual.backbone=vit_tiny_test", "pretrained=false",
                                  *TINY[2:]])
    assert results["status"] == "finished" and results["disk_use_bytes"] > 0
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert any(key.startswith("net.") for key in state)
    assert not any(".extractor.model." in key for key in state)
    assert last.stat().st_size < 5 * 2**20
    Path(run_dir / "checkpoints" / "best-000.ckpt").unlink(missing_ok=True)
    resumed, _ = train_run(["experiment=sisr_dino", "net=espcn", "loss.perceptual.backbone=vit_tiny_test", "pretrained=false",
                            *TINY[2:-4], "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                            "trainer.limit_val_batches=1", "test_after_fit=false", "ckpt_path=last"], run_dir=run_dir)
    assert resumed["status"] == "finished" and resumed["global_step"] == 4

"""Kill a run (SIGTERM or SIGKILL) at many points, resume with ckpt_path=last, and demand the exact
result of an uninterrupted run: weights, optimiser state and the metrics history, bit for bit (CPU).

The kill comes from the test-only ``FEATLAB_FAULT`` hook (featlab.callbacks.faults), so it lands at
a precise point: mid-epoch, mid-validation, at an epoch's end, and inside a checkpoint write.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featlab.train import SIGTERM_EXIT_CODE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# 3 epochs x 4 batches, 2 validation batches per epoch: checkpoints after steps 4, 8, 12.
RUN = ["trainer=cpu", "logger=csv", "trainer.enable_progress_bar=false", "data.num_workers=0",
       "experiment=sisr_l1", "net=espcn", "data.hr_crop=16", "data.batch_size=2", "data.repeat=2",
       "data.val_max_size=32", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
       "test_after_fit=false", "trainer.max_epochs=3", "trainer.log_every_n_steps=1"]
FAULTS = [
    # SIGTERM: Lightning stops at the next batch boundary and featlab saves last.ckpt there
    "SIGTERM@train_batch_start:3",     # mid-epoch 0, before any checkpoint exists
    "SIGTERM@train_batch_end:6",       # mid-epoch 1
    "SIGTERM@validation_batch_end:1",  # inside the first validation
    "SIGTERM@validation_start:2",      # as the second validation begins
    "SIGTERM@train_epoch_end:2",       # at the end of epoch 1
    "SIGTERM@save:3",                  # while a checkpoint is being written
    # SIGKILL: nothing runs after it; resume from the newest intact checkpoint on disk
    "SIGKILL@train_batch_start:6",
    "SIGKILL@train_batch_end:7",
    "SIGKILL@validation_batch_end:3",
    "SIGKILL@save:2",                  # between writing last.ckpt's data and its rename
    "SIGKILL@save:4",
]


def _train(run_dir: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("FEATLAB_FAULT", None)
    if fault:
        env["FEATLAB_FAULT"] = fault
    return subprocess.run([sys.executable, "train.py", *RUN, f"paths.output_root={run_dir.parent}",
                           f"hydra.run.dir={run_dir}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}.{i}")


def _history(run_dir: Path) -> dict[tuple[str, str], str]:
    """(step, metric) -> value for every per-step loss and validation metric the CSV logger recorded;
    a value logged twice for one step with two different values would be a replay that diverged.

    Epoch means of training metrics (``*_epoch``) are left out: Lightning does not checkpoint its
    running means, so for an epoch interrupted mid-way they average only the batches after the resume.
    """
    seen: dict[tuple[str, str], str] = {}
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if value and ("loss" in key or "psnr" in key) and not key.endswith("_epoch"):
                    assert seen.setdefault((row["step"], key), value) == value, (row["step"], key)
    return seen


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, dict]:
    run_dir = tmp_path_factory.mktemp("baseline") / "run"
    done = _train(run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True), _history(run_dir)


@pytest.mark.parametrize("fault", FAULTS)
def test_killed_then_resumed_equals_uninterrupted(fault, uninterrupted, tmp_path):
    reference, reference_history = uninterrupted
    run_dir = tmp_path / "run"
    killed = _train(run_dir, fault=fault)
    expected = SIGTERM_EXIT_CODE if fault.startswith("SIGTERM") else -signal.SIGKILL
    assert killed.returncode == expected, killed.stderr[-3000:]

    resumed = _train(run_dir, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    final = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert final["global_step"] == reference["global_step"] == 12
    for key, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    ours, theirs = dict(_tensors(final["optimizer_states"])), dict(_tensors(reference["optimizer_states"]))
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    assert _history(run_dir) == reference_history  # nothing lost, nothing replayed differently
    assert not list(checkpoints.glob("last-v*.ckpt")) and not list(checkpoints.glob(".*.partial"))


def test_resuming_a_finished_run_is_refused_unless_extended(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    assert _train(run_dir).returncode == 0
    again = _train(run_dir, "ckpt_path=last")
    assert again.returncode == 2 and "already finished" in again.stderr and "trainer.max_epochs" in again.stderr
    longer = _train(run_dir, "ckpt_path=last", "trainer.max_epochs=4")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 16

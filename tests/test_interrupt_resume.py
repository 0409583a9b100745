"""A pre-empted run: SIGTERM saves last.ckpt, records 'interrupted', exits 143; ckpt_path=last continues it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from featlab.train import SIGTERM_EXIT_CODE

REPO = Path(__file__).resolve().parents[1]
QUIET = ["trainer=cpu", "logger=csv", "trainer.enable_progress_bar=false", "data.num_workers=0"]
TINY_SISR = ["experiment=sisr_l1", "net=espcn", "data.hr_crop=32", "data.batch_size=2", "data.repeat=1",
             "data.val_max_size=48", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
             "test_after_fit=false", "task.scheduler.kind=constant"]


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_sigterm_checkpoints_and_ckpt_path_last_resumes(tmp_path, train_run):
    run_dir = tmp_path / "run"
    overrides = [*QUIET, *TINY_SISR, f"paths.output_root={tmp_path}"]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *overrides, "trainer.max_epochs=100000", f"hydra.run.dir={run_dir}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_for(last, proc)  # an epoch has ended: training is under way
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == SIGTERM_EXIT_CODE, output
    assert "SIGTERM: saved" in output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and "SIGTERM" in results["error"]
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)
    assert stopped_at["global_step"] >= 2

    finish_epochs = stopped_at["epoch"] + 2
    resumed, _ = train_run([*TINY_SISR, f"trainer.max_epochs={finish_epochs}", "ckpt_path=last"], run_dir=run_dir)
    assert resumed["status"] == "finished"
    assert resumed["global_step"] > stopped_at["global_step"]
    assert resumed["epochs"] == finish_epochs

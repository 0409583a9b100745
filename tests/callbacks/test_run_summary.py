"""The lines a run ends with: best metric, results.json, kept checkpoints, the W&B page or sync line."""

from __future__ import annotations

import pytest

from featlab.callbacks.results import run_summary
from featlab.loggers import WandbRun


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for name in ("best-003.ckpt", "last.ckpt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"x")
    return tmp_path


def test_best_checkpoint_results_and_checkpoints(run_dir):
    results = {"status": "finished", "metrics": {"val/psnr": 20.0},
               "best_checkpoint": {"path": str(run_dir / "checkpoints" / "best-003.ckpt"), "score": 23.5}}
    lines = run_summary(results, run_dir / "results.json", "val/psnr").splitlines()
    assert lines == [f"run finished: {run_dir}",
                     "  best val/psnr: 23.5 (checkpoint best-003.ckpt)",
                     f"  results: {run_dir / 'results.json'}",
                     f"  checkpoints: best-003.ckpt, last.ckpt (in {run_dir / 'checkpoints'})"]


def test_without_a_checkpoint_the_last_value_is_the_best_known(tmp_path):
    """fast_dev_run keeps no checkpoint: the logged value stands in, and nothing is claimed kept."""
    results = {"status": "finished", "metrics": {"val/knn_top1": 0.25}, "best_checkpoint": {"path": None, "score": None}}
    text = run_summary(results, tmp_path / "results.json", "val/knn_top1")
    assert "best val/knn_top1: 0.25\n" in text and "checkpoints: none kept" in text
    assert "best val/loss: n/a" in run_summary({"status": "interrupted"}, tmp_path / "results.json", "val/loss")


def test_wandb_page_or_sync_line(tmp_path):
    results = {"status": "finished"}
    online = run_summary(results, tmp_path / "results.json", "val/loss", WandbRun(url="https://wandb.ai/me/featlab/runs/abc"))
    assert online.endswith("  W&B: https://wandb.ai/me/featlab/runs/abc")
    offline = run_summary(results, tmp_path / "results.json", "val/loss", WandbRun(sync_command="wandb sync /r/wandb/x"))
    assert offline.endswith("  W&B ran offline; upload with: wandb sync /r/wandb/x")
    assert "W&B" not in run_summary(results, tmp_path / "results.json", "val/loss", None)


def test_a_run_ends_with_its_summary_in_train_log(train_run):
    overrides = ["experiment=sisr_l1", "net=espcn", "data.hr_crop=32", "data.batch_size=2", "data.repeat=1",
                 "data.val_max_size=48", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=default",
                 "logger.wandb.mode=offline"]
    results, run_dir = train_run(overrides)
    assert results["status"] == "finished", results["error"]
    log = (run_dir / "train.log").read_text()
    summary = log[log.index(f"run finished: {run_dir}"):]
    best = results["best_checkpoint"]
    assert f"best val/psnr: {best['score']:.6g} (checkpoint best-000.ckpt)" in summary
    assert f"results: {run_dir / 'results.json'}" in summary
    assert "checkpoints: best-000.ckpt, last.ckpt" in summary
    assert f"upload with: {results['wandb_sync']}" in summary and results["wandb_sync"].startswith("wandb sync /")

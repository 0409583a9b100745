"""One list of the overrides that do not identify a run: run names/tags and job folders agree."""

from __future__ import annotations

from featlab.config import compose
from featlab.overrides import NON_IDENTIFYING_KEYS, identifies_run
from featlab.train import study_overrides

OVERRIDES = ["experiment=sisr_l1", "loss.pixel.weight=2", "+sweep=sisr_loss_weight", "trainer=cpu",
             "trainer.max_epochs=3", "data.num_workers=0", "callbacks.nan_guard=null", "logger=csv",
             "paths.output_root=/tmp/runs", "data.hr_crop=64"]


def test_job_folder_names_and_run_names_leave_out_the_same_overrides():
    cfg = compose(OVERRIDES, return_hydra_config=True)
    in_dirname = set(cfg.hydra.job.override_dirname.split(","))
    kept = study_overrides(OVERRIDES)
    assert in_dirname == set(kept)
    assert set(kept) == {"experiment=sisr_l1", "loss.pixel.weight=2", "+sweep=sisr_loss_weight", "data.hr_crop=64"}


def test_every_non_identifying_prefix_is_left_out():
    for prefix in NON_IDENTIFYING_KEYS:
        assert not identifies_run(f"{prefix.rstrip('.')}.x=1") and not identifies_run(f"+{prefix.rstrip('.')}.x=1")
    assert identifies_run("data.scale=2") and identifies_run("experiment=sisr_dino")

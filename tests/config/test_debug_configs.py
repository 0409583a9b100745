"""The ``debug=`` group (lightning-hydra-template's): each option composes with every experiment and
does what it says, and every experiment runs end to end under ``debug=fdr``, as the template's
test suite runs each of its experiments with fast_dev_run."""

from __future__ import annotations

import csv
import math

import pytest

from featlab.backbones import create, save_backbone
from featlab.config import compose, config_dir

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
DEBUG = sorted(p.stem for p in (config_dir() / "debug").glob("*.yaml"))

# Small inputs per task so that one step of each experiment takes seconds on 2 CPU cores; the
# experiment's task, networks, losses and callbacks stay its own (the same sizes as the tasks' own
# end-to-end tests use).
TINY = {
    "sisr": ["data.hr_crop=32", "data.batch_size=2", "data.repeat=1", "data.val_max_size=48"],
    "dino": ["data.batch_size=2", "data.multicrop.global_crops_size=32", "data.multicrop.local_crops_size=16",
             "data.multicrop.local_crops_number=2", "data.synthetic.n_per_class=2"],
    "dsr": ["data.batch_size=4", "data.eval_batch_size=4"],
    "slots": ["data.batch_size=2"],
}


def task_of(experiment: str) -> str:
    return str(compose([f"experiment={experiment}"], return_hydra_config=True).hydra.runtime.choices.task)


def test_the_group_holds_the_templates_options():
    assert {"default", "fdr", "overfit", "limit", "profiler"} <= set(DEBUG)
    assert set(TINY) == {task_of(name) for name in EXPERIMENTS}, "a new task needs its TINY sizes here"


@pytest.mark.parametrize("debug", DEBUG)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_debug_option_composes_with_every_experiment(experiment, debug):
    """The debug config comes after the experiment and the CPU budget: its settings win over both,
    and debug runs are kept apart from real ones (runs/debug/...)."""
    cfg = compose([f"experiment={experiment}", f"debug={debug}"])
    trainer = cfg.trainer
    assert trainer.detect_anomaly == (debug != "profiler")
    assert cfg.data.num_workers == 0 and "debug" in cfg.tags
    assert cfg.paths.output_root.endswith("runs/debug")
    expected = {"default": {"max_epochs": 1}, "fdr": {"fast_dev_run": True},
                "overfit": {"overfit_batches": 3, "max_epochs": 20},
                "limit": {"max_epochs": 3, "limit_train_batches": 4, "limit_val_batches": 2},
                "profiler": {"max_epochs": 1}}[debug]
    assert {key: trainer[key] for key in expected} == expected
    if debug == "overfit":
        assert cfg.callbacks.get("early_stopping") is None
    if debug == "profiler":
        assert trainer.profiler._target_.endswith("SimpleProfiler")


def test_without_debug_nothing_changes():
    plain = compose(["experiment=dsr_identity"])
    assert not plain.trainer.fast_dev_run and plain.trainer.get("detect_anomaly") is None
    assert plain.tags == [] and plain.paths.output_root == "./runs"


def test_debug_works_on_the_gpu_presets_too():
    trainer = compose(["experiment=sisr_dino", "trainer=gpu", "debug=limit"]).trainer
    assert (trainer.accelerator, trainer.max_epochs, trainer.limit_train_batches) == ("gpu", 3, 4)


@pytest.fixture(scope="module")
def dino_checkpoint(tmp_path_factory):
    """slots_dinockpt reads a backbone saved by a DINO run: a tiny one stands in for it."""
    fx = create("vit_tiny_test", layers=["last"], pretrained=False)
    return save_backbone(fx, tmp_path_factory.mktemp("dino") / "backbone.pt")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_with_debug_fdr(experiment, train_run, dino_checkpoint):
    overrides = [f"experiment={experiment}", "debug=fdr", "pretrained=false", *TINY[task_of(experiment)]]
    if experiment == "slots_dinockpt":
        overrides.append(f"task.backbone.checkpoint={dino_checkpoint}")
    results, run_dir = train_run(overrides)
    assert results["status"] == "finished", results["error"]
    assert results["global_step"] == 1
    assert any(key.startswith("test/") for key in results["metrics"])
    losses = [value for key, value in results["metrics"].items() if key.startswith("train/loss")]
    assert losses and all(math.isfinite(value) for value in losses)


def test_debug_profiler_writes_its_report_into_the_run_dir(train_run):
    results, run_dir = train_run(["experiment=sisr_l1", "net=espcn", "debug=profiler", *TINY["sisr"],
                                  "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                                  "trainer.limit_test_batches=1"])
    assert results["status"] == "finished", results["error"]
    report = (run_dir / "fit-profile.txt").read_text()
    assert "run_training_epoch" in report and "optimizer_step" in report
    assert results["config"]["paths"]["output_dir"] == str(run_dir)


def test_debug_overfit_trains_on_the_same_few_batches(train_run):
    """Lightning re-creates the loaders with a sequential sampler; featlab's resumable loaders accept
    that (they failed before), and the loss on the fixed batches falls."""
    results, run_dir = train_run(["experiment=sisr_l1", "net=espcn", "debug=overfit", *TINY["sisr"],
                                  "trainer.max_epochs=4", "test_after_fit=false"])
    assert results["status"] == "finished", results["error"]
    assert results["global_step"] == 4 * 3  # overfit_batches=3 per epoch
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        losses = [float(row["train/loss_epoch"]) for row in csv.DictReader(handle) if row.get("train/loss_epoch")]
    assert len(losses) == 4 and losses[-1] < losses[0]

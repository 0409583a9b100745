"""Every experiment on the default ``trainer=cpu`` is a pipeline check of bounded length; the long
schedules stay with the GPU presets; explicit overrides win over both (composition only, no training)."""

from __future__ import annotations

import math

import pytest

from featlab.config import compose, config_dir

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))

# What the CPU pipeline check may run. Measured on 2 shared cores (README "Run times"): the slowest
# step (dsr_identity) took up to 30 s, so 8 steps + 2 validation and 2 test batches stay within minutes.
MAX_TRAIN_STEPS = 8
MAX_EVAL_BATCHES = 2
MAX_BATCH_SIZE = 16       # a DINO step at the recipe's 64 took ~2 min here: budget/task/cpu_dino.yaml
# Experiments made for a CPU run their own schedule on trainer=cpu (trainer=cpu_full), each with the
# number of training steps its README measurement covers.
MADE_FOR_CPU = {"dino_cpu_demo": 32 * 32, "slots_control": 6400}


def steps_per_epoch(cfg) -> float:
    """Training batches per epoch as configured: ``limit_train_batches``, else the data's own length."""
    limit = cfg.trainer.limit_train_batches
    if isinstance(limit, int):
        return limit
    samples = cfg.data.get("samples_per_epoch")  # otherwise the epoch length is the data set's (unbounded here)
    return math.ceil(samples / cfg.data.batch_size) if samples else math.inf


def train_steps(cfg) -> float:
    by_epochs = cfg.trainer.max_epochs * steps_per_epoch(cfg) if cfg.trainer.max_epochs else math.inf
    return min(by_epochs, cfg.trainer.max_steps) if cfg.trainer.max_steps and cfg.trainer.max_steps > 0 else by_epochs


def test_every_experiment_is_found():
    assert {"dsr_identity", "dino_vits16", "dino_resnet18", "sisr_dino", "slots_dino"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("explicit", [False, True], ids=["default", "trainer=cpu"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_cpu_runs_a_bounded_pipeline_check(experiment, explicit):
    cfg = compose([f"experiment={experiment}", *(["trainer=cpu"] if explicit else [])])
    assert cfg.trainer.accelerator == "cpu"
    if experiment in MADE_FOR_CPU and not explicit:
        assert train_steps(cfg) <= MADE_FOR_CPU[experiment]
        return
    assert train_steps(cfg) <= MAX_TRAIN_STEPS, (
        f"{experiment} trains {train_steps(cfg)} steps on trainer=cpu: a GPU schedule leaked into the CPU "
        f"pipeline check (conf/budget/cpu.yaml must come after the experiment)")
    for key in ("limit_val_batches", "limit_test_batches"):
        limit = cfg.trainer[key]
        assert isinstance(limit, int) and limit <= MAX_EVAL_BATCHES, f"{experiment}: trainer.{key}={limit}"
    for key in ("batch_size", "eval_batch_size"):
        size = cfg.data.get(key)
        assert size is None or size <= (MAX_BATCH_SIZE if key == "batch_size" else 2 * MAX_BATCH_SIZE), \
            f"{experiment}: data.{key}={size} on trainer=cpu"


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_gpu_presets_keep_the_experiments_schedule(experiment, trainer):
    own = compose([f"experiment={experiment}", "trainer=cpu_full"]).trainer   # the experiment's schedule
    cfg = compose([f"experiment={experiment}", f"trainer={trainer}"]).trainer
    assert cfg.accelerator == "gpu"
    for key in ("max_epochs", "max_steps", "limit_train_batches", "limit_val_batches", "limit_test_batches"):
        assert cfg[key] == own[key], f"{experiment} trainer={trainer}: {key}"
    full_data = compose([f"experiment={experiment}", "trainer=cpu_full"]).data
    gpu_data = compose([f"experiment={experiment}", f"trainer={trainer}"]).data
    assert gpu_data.batch_size == full_data.batch_size


def test_headline_schedules_are_the_published_ones():
    assert compose(["experiment=dsr_identity", "trainer=gpu"]).trainer.max_epochs == 80
    assert compose(["experiment=dino_vits16", "trainer=ddp"]).trainer.max_epochs == 100
    assert compose(["experiment=dino_resnet18", "trainer=gpu"]).trainer.max_epochs == 100
    assert compose(["experiment=dino_vits16_paper", "trainer=gpu"]).trainer.max_epochs == 100
    full = compose(["experiment=dsr_identity", "trainer=gpu"]).trainer
    assert full.limit_train_batches is None and full.limit_test_batches is None
    assert compose(["experiment=dino_vits16", "trainer=gpu"]).data.batch_size == 64


@pytest.mark.parametrize("overrides, expected", [
    (["experiment=dsr_identity", "trainer.max_epochs=5"], {"max_epochs": 5, "limit_train_batches": 4}),
    (["experiment=dsr_identity", "trainer=cpu", "trainer.limit_train_batches=null"],
     {"max_epochs": 2, "limit_train_batches": None}),
    (["experiment=dino_vits16", "trainer=gpu", "trainer.max_epochs=3", "trainer.limit_test_batches=2"],
     {"max_epochs": 3, "limit_test_batches": 2, "accelerator": "gpu"}),
    (["experiment=dsr_identity", "trainer=cpu_full"], {"max_epochs": 80, "limit_train_batches": None}),
    (["experiment=dino_cpu_demo"], {"max_epochs": 32, "limit_train_batches": None}),
    (["experiment=dino_cpu_demo", "trainer=cpu"], {"max_epochs": 2, "limit_train_batches": 4}),
    (["experiment=dino_cpu_demo", "trainer=gpu"], {"max_epochs": 32, "accelerator": "gpu"}),
    (["trainer.max_steps=7"], {"max_steps": 7, "max_epochs": 2}),
])
def test_explicit_overrides_win(overrides, expected):
    trainer = compose(overrides).trainer
    assert {key: trainer[key] for key in expected} == expected


def test_explicit_data_overrides_win_over_the_task_budget():
    assert compose(["experiment=dino_vits16", "data.batch_size=4"]).data.batch_size == 4
    assert compose(["experiment=dino_resnet18", "data.eval_batch_size=64"]).data.eval_batch_size == 64


def test_the_cpu_check_keeps_other_trainer_settings_of_the_experiment():
    """The budget replaces the schedule only: e.g. the slot experiments' gradient clipping stays."""
    assert compose(["experiment=slots_dino"]).trainer.gradient_clip_val == 1.0

"""Loggers: W&B runs of a multirun are grouped per launch, named and tagged by their swept values."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from featlab.config import compose
from featlab.errors import ConfigError
from featlab.loggers import (
    build_loggers,
    finish_wandb,
    flatten,
    hydra_sweep_identity,
    job_name,
    short_names,
    sweep_identity_for,
    swept_keys,
    wandb_mode,
)

LAUNCH = ["+sweep=sisr_loss_weight", "data.hr_crop=48,96", "net=espcn"]
JOB = ["loss.perceptual.weight=0.5", "data.hr_crop=96", "+sweep=sisr_loss_weight", "net=espcn"]


def test_swept_keys_are_params_and_command_line_sweeps_with_the_command_line_winning():
    params = {"loss.perceptual.weight": "0.05,0.18,0.5", "sweep_grid.depth": "mid,last"}
    launch = ["+sweep=x", "sweep_grid.depth=last", "data.hr_crop=range(32,65,32)", "loss.perceptual.layers=[a,b]",
              "+seed=1,2"]
    assert swept_keys(params, launch) == ["loss.perceptual.weight", "data.hr_crop", "seed"]


def test_job_names_use_the_shortest_unambiguous_key_suffix():
    keys = ["loss.perceptual.weight", "loss.pixel.weight", "data.hr_crop", "experiment"]
    assert short_names(keys) == {"loss.perceptual.weight": "perceptual.weight", "loss.pixel.weight": "pixel.weight",
                                 "data.hr_crop": "hr_crop", "experiment": "experiment"}
    assert job_name({"loss.perceptual.backbone": "dino_vits16", "loss.perceptual.layers": "[feat2, last]"}) == \
        "backbone=dino_vits16,layers=[feat2,_last]"


def test_identity_from_a_sweep_dir_reads_its_multirun_yaml(tmp_path):
    sweep_dir = tmp_path / "multirun-20250101-120000"
    sweep_dir.mkdir()
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"params": {"loss.perceptual.weight": "0.05,0.5"}},
                                               "overrides": {"task": LAUNCH}}}), sweep_dir / "multirun.yaml")
    identity = sweep_identity_for("sisr_loss_weight", sweep_dir, JOB, job_num=3)
    assert identity.group == "sisr_loss_weight-20250101-120000"
    assert identity.name == "weight=0.5,hr_crop=96"
    assert identity.tags == ["loss.perceptual.weight=0.5", "data.hr_crop=96"]
    assert identity.flat_config() == {"sweep.group": "sisr_loss_weight-20250101-120000",
                                      "sweep.keys": "loss.perceptual.weight,data.hr_crop", "sweep.job_num": 3}


@pytest.fixture
def in_multirun_job(tmp_path):
    """HydraConfig as a multirun job sees it (set by Hydra's launcher in a real run), reset afterwards."""
    sweep_dir = tmp_path / "runs" / "multirun-20250101-120000"
    sweep_dir.mkdir(parents=True)
    launch = compose([*LAUNCH[:1], "data.hr_crop=48", f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)
    launch.hydra.overrides.task = LAUNCH
    OmegaConf.save(launch, sweep_dir / "multirun.yaml")
    job = compose([*JOB, f"hydra.sweep.dir={sweep_dir}"], return_hydra_config=True)
    job.hydra.overrides.task = JOB
    job.hydra.job.num = 1
    HydraConfig.instance().set_config(job)
    try:
        yield job
    finally:
        HydraConfig.instance().cfg = None  # later tests must not believe they run inside a multirun


def test_hydra_multirun_job_identity(in_multirun_job):
    identity = hydra_sweep_identity("sisr_loss_weight")
    assert identity is not None
    assert (identity.group, identity.name, identity.job_num) == (
        "sisr_loss_weight-20250101-120000", "weight=0.5,hr_crop=96", 1)


def test_no_identity_outside_a_multirun():
    assert hydra_sweep_identity("study") is None


def test_offline_wandb_run_is_named_grouped_tagged_and_summarised_from_the_sweep(in_multirun_job, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = tmp_path / "job"
    loggers = build_loggers(run_dir, wandb={"enabled": True, "mode": "offline", "project": "featlab-test"},
                            run_name="+sweep=sisr_loss_weight,loss.perceptual.weight=0.5,...",
                            group="sisr_loss_weight", tags=["sisr_loss_weight", "net=espcn"],
                            flat_config=flatten({"loss": {"perceptual": {"weight": 0.5}}, "study": "sisr_loss_weight"}))
    assert isinstance(loggers[0], CSVLogger)
    experiment = loggers[1].experiment
    assert experiment.name == "weight=0.5,hr_crop=96"
    assert experiment.group == "sisr_loss_weight-20250101-120000"
    assert list(experiment.tags) == ["loss.perceptual.weight=0.5", "data.hr_crop=96", "sisr_loss_weight",
                                     "net=espcn"]
    assert experiment.config["loss.perceptual.weight"] == 0.5
    assert experiment.config["sweep.keys"] == "loss.perceptual.weight,data.hr_crop"
    (run_dir / "results.json").write_text(json.dumps({"status": "finished", "metrics": {"val/psnr": 21.5},
                                                      "speed": {"images_per_s": 3.0}, "config": {"x": 1}}))
    command = finish_wandb(loggers).sync_command
    assert command is not None and command.startswith("wandb sync /")
    offline_dir = Path(command.split(" ", 2)[2])
    assert offline_dir.is_dir() and offline_dir.parent == (run_dir / "wandb").resolve()
    expected = (b"weight=0.5,hr_crop=96", b"sisr_loss_weight-20250101-120000", b"data.hr_crop=96",
                b"results.metrics.val/psnr", b"results.speed.images_per_s")
    record = _wandb_record_once_flushed(offline_dir, expected)
    for text in expected:
        assert text in record, text


def _wandb_record_once_flushed(offline_dir: Path, expected, timeout_s: float = 120.0) -> bytes:
    """The offline run file, read once W&B's separate writer process has flushed it (or at the timeout).

    ``finish()`` returns when the run is handed over, not when wandb-core has written its buffers; on a
    loaded machine the file can still hold just its header for a moment, so the test waits for it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        files = list(offline_dir.glob("*.wandb"))
        record = files[0].read_bytes() if files else b""  # protobuf records: strings are stored verbatim
        if all(text in record for text in expected) or time.monotonic() > deadline:
            return record
        time.sleep(0.5)


def test_wandb_auto_mode_is_offline_without_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    assert wandb_mode("disabled") == "disabled"


def test_csv_only_when_wandb_is_off(tmp_path):
    loggers = build_loggers(tmp_path, csv=True, wandb=None)
    assert [type(logger).__name__ for logger in loggers] == ["AppendingCSVLogger"]


def test_finish_wandb_leaves_the_run_to_rank_zero(monkeypatch):
    class WandbLogger:  # named like Lightning's: finish_wandb must not touch it on rank 1
        @property
        def experiment(self):
            raise AssertionError("rank 1 has no W&B run")

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert finish_wandb([WandbLogger()]) is None


def test_config_tags_reach_the_loggers(train_run, monkeypatch):
    """``tags=[...]`` go to W&B beside the study and the identifying overrides (debug=fdr is not one)."""
    import featlab.train

    seen = {}

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return build_loggers(*args, **kwargs)

    monkeypatch.setattr(featlab.train, "build_loggers", recording)
    overrides = ["experiment=sisr_l1", "net=espcn", "data.hr_crop=32", "data.batch_size=2", "data.repeat=1",
                 "data.val_max_size=48", "debug=fdr", "tags=[ablation,v2]"]
    results, _ = train_run(overrides)
    assert results["status"] == "finished", results["error"]
    assert seen["tags"] == ["sisr_l1", "ablation", "v2", "experiment=sisr_l1", "net=espcn", "data.hr_crop=32",
                            "data.batch_size=2", "data.repeat=1", "data.val_max_size=48"]


def test_any_lightning_logger_can_be_added_from_config(tmp_path):
    loggers = build_loggers(tmp_path, wandb=None, extra={
        "more": {"_target_": "lightning.pytorch.loggers.CSVLogger", "name": "more"}, "off": None})
    assert [type(logger).__name__ for logger in loggers] == ["AppendingCSVLogger", "CSVLogger"]
    assert loggers[1].save_dir == str(tmp_path)  # save_dir defaults to the run dir


@pytest.mark.parametrize("entry, words", [
    ({"_target_": "lightning.pytorch.loggers.NoSuchLogger"}, "cannot build"),
    ({"_target_": "collections.OrderedDict"}, "not a Lightning logger"),
    ({"name": "x"}, "needs _target_"),
])
def test_a_bad_extra_logger_names_its_key(tmp_path, entry, words):
    with pytest.raises(ConfigError, match=rf"logger\.extra\.mine.*{words}"):
        build_loggers(tmp_path, wandb=None, extra={"mine": entry})


def test_wandb_log_model_reaches_the_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    loggers = build_loggers(tmp_path, csv=False, sweep=None,
                            wandb={"enabled": True, "mode": "offline", "project": "featlab-test", "log_model": "all"})
    assert loggers[0]._log_model == "all"


def test_callbacks_come_from_config_and_can_be_dropped(tmp_path):
    from featlab.callbacks.images import ImageGridLogger
    from featlab.callbacks.results import ResultsWriter
    from featlab.train import build_callbacks

    def built(overrides):
        cfg = compose(["experiment=sisr_l1", *overrides])
        return build_callbacks(cfg, tmp_path, ResultsWriter(tmp_path))

    names = [type(cb).__name__ for cb in built([])]
    grids = [cb for cb in built([]) if isinstance(cb, ImageGridLogger)]
    assert len(grids) == 1 and grids[0].dir == tmp_path / "images"
    dropped = [type(cb).__name__ for cb in built(["callbacks.images=null", "callbacks.lr_monitor=null"])]
    assert "ImageGridLogger" not in dropped and "LearningRateMonitor" not in dropped
    assert len(dropped) == len(names) - 2 and {"RNGState", "CheckpointOnSignal", "ResultsWriter"} <= set(dropped)
    added = built(["+callbacks.swa={_target_: lightning.pytorch.callbacks.StochasticWeightAveraging, swa_lrs: 0.01}"])
    assert "StochasticWeightAveraging" in [type(cb).__name__ for cb in added]

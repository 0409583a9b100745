"""Named sweeps compose, and a real Hydra multirun of train.py yields one results.json per job and a report.

One subprocess (``python train.py +sweep=...``) serves every end-to-end check: it exercises the
mode set by the sweep file (no ``-m``), command-line values replacing swept params, a job that
raises (``data.hr_crop`` not divisible by ``data.scale``) while the others go on, and the report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from featlab.config import check_sweeper_storage, compose, config_dir, package_version
from featlab.errors import ConfigError
from featlab.loggers import read_launch, sweep_identity_for, swept_keys
from featlab.tools.report import write_report

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml"))
EXPECTED_SWEEPS = {"sisr_backbones", "sisr_loss_weight", "dsr_identity_weight", "slot_backbones", "dino_head_dim"}


def sweep_values(name: str) -> dict[str, list[str]]:
    cfg = compose([f"+sweep={name}"], return_hydra_config=True)
    return {str(k): str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


def test_every_named_sweep_exists():
    assert set(SWEEPS) >= EXPECTED_SWEEPS


@pytest.mark.parametrize("name", SWEEPS)
def test_named_sweep_is_a_multirun_whose_every_value_composes(name):
    """Each swept value (others at their first value) composes and resolves: no job dies at start-up."""
    cfg = compose([f"+sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN  # `python train.py +sweep=<name>` needs no -m
    assert cfg.study == name  # runs/<study>/multirun-<time>, the experiments/<study> folder, the W&B group
    values = sweep_values(name)
    assert values and all(len(v) > 1 for v in values.values())
    first = {k: v[0] for k, v in values.items()}
    for key, options in values.items():
        for option in options:
            chosen = {**first, key: option}
            job = compose([f"+sweep={name}", "pretrained=false", *[f"{k}={v}" for k, v in chosen.items()]])
            plain = OmegaConf.to_container(job, resolve=True)
            assert plain["study"] == name
            if not key.startswith("experiment"):
                node = plain
                for part in key.split("."):
                    node = node[part]
                assert str(node) == option


def test_sisr_backbones_looks_up_family_specific_layer_names():
    layers = {}
    for backbone in ("dino_vits16", "efficientnet_lite0", "vgg19"):
        cfg = compose(["+sweep=sisr_backbones", f"loss.perceptual.backbone={backbone}", "sweep_grid.depth=both"])
        layers[backbone] = list(cfg.loss.perceptual.layers)
    assert layers == {"dino_vits16": ["feat2", "last"], "efficientnet_lite0": ["stages.1", "last"],
                      "vgg19": ["relu3_4", "relu5_4"]}


def test_optional_launcher_and_sweeper_configs_do_not_affect_default_composition():
    cfg = compose(["+sweep=sisr_loss_weight"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    assert {"slurm.yaml"} <= {p.name for p in (config_dir() / "hydra" / "launcher").glob("*.yaml")}
    assert {"optuna_tpe.yaml"} <= {p.name for p in (config_dir() / "hydra" / "sweeper").glob("*.yaml")}


def plugin_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        return False


@pytest.mark.skipif(not (plugin_installed("hydra_plugins.hydra_optuna_sweeper")
                         and plugin_installed("hydra_plugins.hydra_submitit_launcher")),
                    reason="hydra-optuna-sweeper / hydra-submitit-launcher not installed (pip install '.[sweeps]')")
def test_slurm_launcher_and_optuna_sweeper_configs_compose_with_the_plugins():
    cfg = compose(["+sweep=sisr_loss_weight", "hydra/launcher=slurm", "hydra/sweeper=optuna_tpe", "trainer=ddp",
                   "trainer.num_nodes=2", "hydra.launcher.gpus_per_node=4"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["nodes"], launcher["tasks_per_node"]) == (2, 4)  # one task per GPU for Lightning DDP
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize"  # from task.monitor.mode: max
    assert dict(sweeper.params) == {"loss.perceptual.weight": "0.03,0.1,0.3"}


# -- a real multirun --------------------------------------------------------------------------------
TINY = ["loss.perceptual.weight=0.05", "loss.perceptual.backbone=vit_tiny_test", "pretrained=false", "net=espcn",
        "data.repeat=1", "data.val_max_size=48", "data.batch_size=2", "data.num_workers=0",
        "data.persistent_workers=false", "logger=csv", "trainer=cpu", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
GRID = ["data.scale=3,4", "data.hr_crop=32,48"]  # hr_crop=32 with scale=3 is impossible: that job fails
# Job folders named by number only: this many overrides make Hydra's override_dirname exceed 255 bytes.
SHORT_DIRS = "hydra.sweep.subdir=${hydra.job.num}"


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweep") / "multirun-test"
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    command = [sys.executable, "train.py", "+sweep=sisr_loss_weight", *TINY, *GRID, f"hydra.sweep.dir={sweep_dir}",
               SHORT_DIRS]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name))


def test_multirun_writes_one_results_json_per_job_and_a_failed_job_does_not_stop_the_sweep(multirun):
    results = {}
    for job in job_dirs(multirun):
        data = json.loads((job / "results.json").read_text())
        overrides = dict(o.split("=", 1) for o in data["config"]["overrides"])
        results[(overrides["data.scale"], overrides["data.hr_crop"])] = data
    assert sorted(results) == [("3", "32"), ("3", "48"), ("4", "32"), ("4", "48")]
    assert results[("3", "32")]["status"] == "failed"
    assert "data.hr_crop" in results[("3", "32")]["error"]
    for key in [("3", "48"), ("4", "32"), ("4", "48")]:
        assert results[key]["status"] == "finished"
        assert "val/psnr" in results[key]["metrics"]
        assert results[key]["config"]["study"] == "sisr_loss_weight"


def test_multirun_jobs_get_wandb_names_and_group_from_their_swept_values(multirun):
    params, launch = read_launch(multirun)
    # the command line's single weight replaced the sweep file's three: only scale x hr_crop vary
    assert swept_keys(params, launch) == ["data.scale", "data.hr_crop"]
    names = set()
    for job in job_dirs(multirun):
        overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        identity = sweep_identity_for("sisr_loss_weight", multirun, overrides)
        assert identity.group == "sisr_loss_weight-test"
        assert identity.tags == [f"data.scale={identity.swept['data.scale']}",
                                 f"data.hr_crop={identity.swept['data.hr_crop']}"]
        names.add(identity.name)
    assert names == {"scale=3,hr_crop=32", "scale=3,hr_crop=48", "scale=4,hr_crop=32", "scale=4,hr_crop=48"}


def test_report_of_the_multirun_has_a_row_per_job_with_its_swept_values(multirun, tmp_path):
    out = write_report([multirun], out=tmp_path / "report.md")
    markdown = out.read_text()
    table = markdown.split("## Final metrics")[1].split("\n\n")[1].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert header[:5] == ["run", "scale", "hr_crop", "status", "val/psnr"]
    assert [(r[1], r[2], r[3]) for r in rows] == [("3", "32", "**failed**"), ("3", "48", "finished"),
                                                  ("4", "32", "finished"), ("4", "48", "finished")]
    assert not any("★" in r[4] for r in rows)  # one seed per configuration: no best is named
    assert "Best: none named (inconclusive: fewer than 3 seeds" in markdown
    assert (tmp_path / "report_val_psnr.png").is_file() and (tmp_path / "report_curves.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not plugin_installed("hydra_plugins.hydra_optuna_sweeper"),
                    reason="hydra-optuna-sweeper not installed (pip install '.[sweeps]')")
def test_optuna_sweep_runs_trials_and_reads_the_monitored_metric(tmp_path):
    """Each job returns its monitored metric (featlab.train.objective); Optuna reports the best."""
    sweep_dir = tmp_path / "optuna"
    command = [sys.executable, "train.py", "-m", "+sweep=sisr_loss_weight", "hydra/sweeper=optuna_tpe",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", *TINY[1:], "data.hr_crop=32",
               f"hydra.sweep.dir={sweep_dir}", SHORT_DIRS]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    psnrs = [json.loads((sweep_dir / str(i) / "results.json").read_text())["metrics"]["val/psnr"] for i in (0, 1)]
    assert best.best_value == pytest.approx(max(psnrs))  # val/psnr, maximised


def optuna_storage_works() -> bool:
    """hydra-optuna-sweeper's Optuna 2 opens a database only with SQLAlchemy 1.x (the [sweeps] extra)."""
    version = package_version("sqlalchemy")
    return plugin_installed("hydra_plugins.hydra_optuna_sweeper") and version is not None and int(version.split(".")[0]) < 2


@pytest.mark.parametrize(("optuna", "sqlalchemy", "refused"), [("2.10.1", "2.1.9", True), ("2.10.1", "1.4.54", False),
                                                                 ("3.6.1", "2.0.30", False)])
def test_a_storage_optuna_cannot_open_is_one_line_before_any_job(monkeypatch, optuna, sqlalchemy, refused):
    import featlab.config

    monkeypatch.setattr(featlab.config, "package_version", {"optuna": optuna, "sqlalchemy": sqlalchemy}.get)
    argv = ["+sweep=sisr_loss_weight", "hydra/sweeper=optuna_tpe", "hydra.sweeper.storage=sqlite:///runs/o.db"]
    if refused:
        with pytest.raises(ConfigError, match=r"^hydra.sweeper.storage: Optuna 2.10.1 .* SQLAlchemy 2.1.9: pip install 'sqlalchemy<2'"):
            check_sweeper_storage(argv)
    else:
        check_sweeper_storage(argv)
    check_sweeper_storage([*argv[:2], "hydra.sweeper.storage=null"])  # no storage: nothing to open


@pytest.mark.slow
@pytest.mark.skipif(not optuna_storage_works(), reason="needs hydra-optuna-sweeper and SQLAlchemy < 2 (pip install '.[sweeps]')")
def test_optuna_search_resumes_from_its_sqlite_storage(tmp_path):
    """Two launches on one sqlite file are one study: the second sees the first's trial and reports the
    best of both."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for launch in ("first", "second"):
        command = [sys.executable, "train.py", "-m", "+sweep=sisr_loss_weight", "hydra/sweeper=optuna_tpe",
                   "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage}", *TINY[1:], "data.hr_crop=32",
                   f"hydra.sweep.dir={tmp_path / launch}", SHORT_DIRS]
        done = subprocess.run(command, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"}, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    psnrs = [json.loads((tmp_path / launch / "0" / "results.json").read_text())["metrics"]["val/psnr"]
             for launch in ("first", "second")]
    study = optuna.load_study(study_name="sisr_loss_weight", storage=storage)
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    assert [trial.value for trial in study.trials] == pytest.approx(psnrs)
    assert OmegaConf.load(tmp_path / "second" / "optimization_results.yaml").best_value == pytest.approx(max(psnrs))

"""SISR end to end: composition of every experiment, train.py runs, resume, eval, bench, errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import featlab
from featlab.config import compose, config_dir
from featlab.errors import ConfigError

SISR_EXPERIMENTS = ["sisr_l1", "sisr_vgg", "sisr_convnext", "sisr_dino", "sisr_dino_multi", "sisr_effnet", "sisr_control"]
# A tiny, quick SISR setup: small crops and val images, a 2-block EDSR.
TINY = ["data.hr_crop=32", "data.batch_size=2", "data.repeat=1", "data.val_max_size=48",
        "net.n_resblocks=1", "net.n_feats=8"]


def all_experiments() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", all_experiments())
def test_every_experiment_composes_and_resolves(name):
    cfg = compose([f"experiment={name}", "pretrained=false"])
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["task"]["_target_"].startswith("featlab.tasks.")
    assert container["study"] != "default"


@pytest.mark.parametrize("name", SISR_EXPERIMENTS)
def test_sisr_experiments_build_their_losses(name):
    from featlab.losses.composite import CompositeLoss

    cfg = compose([f"experiment={name}", "pretrained=false"])
    loss = CompositeLoss.from_config(cfg.loss)
    assert "pixel" in loss.terms
    assert ("perceptual" in loss.terms) == (name != "sisr_l1")
    assert cfg.loss.get("perceptual") is None or cfg.loss.perceptual.weight == pytest.approx(0.1)


def test_sisr_control_measures_both_arms_with_the_perceptual_arms_criterion():
    """experiments/sisr_control/README.md calls the held-out distance the trained criterion: keep it so."""
    arms = {loss: compose(["experiment=sisr_control", f"loss={loss}"]) for loss in ("l1", "perceptual_effnet")}
    measured = [OmegaConf.to_container(cfg.task.eval_feature_distance, resolve=True) for cfg in arms.values()]
    assert measured[0] == measured[1]
    trained = OmegaConf.to_container(arms["perceptual_effnet"].loss.perceptual, resolve=True)
    assert {key: trained[key] for key in measured[0]} == measured[0]
    assert "perceptual" not in arms["l1"].loss


def test_unknown_experiment_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as info:
        compose(["experiment=sisr_nope"])
    assert "sisr_dino" in str(info.value.__cause__ or info.value) or "sisr_dino" in str(info.value)


def test_fast_dev_run_sisr_dino(train_run):
    results, run_dir = train_run(["experiment=sisr_dino", "pretrained=false", "trainer.fast_dev_run=true", *TINY])
    assert results["status"] == "finished", results["error"]
    assert "test/psnr" in results["metrics"] and "test/psnr_bicubic" in results["metrics"]
    assert json.loads((run_dir / "results.json").read_text())["config"]["study"] == "sisr_dino"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Two epochs of a tiny EDSR with the DINO perceptual loss; shared by the tests below."""
    from featlab.config import compose as compose_cfg
    from featlab.train import run

    root = tmp_path_factory.mktemp("short")
    overrides = ["experiment=sisr_dino", "pretrained=false", *TINY, "loss.perceptual.backbone=vit_tiny_test",
                 "trainer.max_epochs=2", "trainer.limit_train_batches=3",
                 "task.eval_feature_distance={backbone:vit_tiny_test,layers:[feat2],pretrained:false}"]
    fixed = ["trainer=cpu", "logger=csv", "data.num_workers=0", "trainer.enable_progress_bar=false",
             f"paths.output_root={root}"]
    results = run(compose_cfg(fixed + overrides), run_dir=root / "run", overrides=overrides)
    return results, root / "run"


def test_short_run_writes_results_log_checkpoint_and_grids(short_run):
    results, run_dir = short_run
    assert results["status"] == "finished", results["error"]
    metrics = results["metrics"]
    for key in ("val/psnr", "val/ssim", "val/ms_ssim", "val/ms_ssim_bicubic", "val/ms_ssim_scales",
                "val/psnr_bicubic", "test/samples/psnr", "test/samples/ms_ssim", "train/loss_perceptual",
                "val/feature_distance", "val/feature_distance_bicubic", "test/samples/feature_distance"):
        assert key in metrics, sorted(metrics)
    assert metrics["val/feature_distance"] > 0 and metrics["test/feature_distance_bicubic"] > 0
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any("feature_distance" in key for key in state)  # the fixed scorer is never checkpointed
    assert 1 <= metrics["val/ms_ssim_scales"] <= 5 and "val/ms_ssim_scales_bicubic" not in metrics
    assert results["speed"]["peak_memory_mb"] > 0
    assert (run_dir / "csv" / "metrics.csv").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert sorted(p.name for p in (run_dir / "images").glob("*.png")) == ["val_epoch000.png", "val_epoch001.png"]
    assert results["config"]["overrides"][0] == "experiment=sisr_dino"


def test_eval_reproduces_the_test_metrics_and_logs_them(short_run, tmp_path, capsys):
    """With the run's logger config (here the default: CSV and W&B, offline without credentials)."""
    from featlab.eval import evaluate

    results, run_dir = short_run
    best = results["best_checkpoint"]["path"]
    evaluated = evaluate(best, ["data.num_workers=0"], output=str(tmp_path / "eval"))
    assert evaluated["metrics"]["test/psnr"] == pytest.approx(results["metrics"]["test/psnr"], abs=1e-4)
    with (tmp_path / "eval" / "csv" / "metrics.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert float(row["test/psnr"]) == pytest.approx(evaluated["metrics"]["test/psnr"], abs=1e-4)
    offline = list((tmp_path / "eval" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and f"wandb sync {offline[0].resolve()}" in capsys.readouterr().out
    assert evaluated["config"]["paths"]["output_dir"] == str(tmp_path / "eval")


def test_eval_uses_the_trainer_config(short_run, tmp_path, monkeypatch):
    import featlab.eval
    from featlab.train import build_trainer

    built = []

    def recording(*args, **kwargs):
        built.append(build_trainer(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(featlab.eval, "build_trainer", recording)
    results, _ = short_run
    featlab.eval.evaluate(results["best_checkpoint"]["path"], ["data.num_workers=0", "logger=csv",
                          "trainer.precision=bf16-mixed", "trainer.limit_test_batches=1"], output=str(tmp_path / "e"))
    trainer = built[0]
    assert trainer.precision == "bf16-mixed" and trainer.limit_test_batches == 1
    assert type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices == 1
    assert [type(logger).__name__ for logger in trainer.loggers] == ["AppendingCSVLogger"]


@pytest.mark.slow
def test_eval_on_two_ddp_processes_writes_one_folder(short_run, tmp_path):
    """trainer.devices=2: the rank Lightning starts re-runs the command and must write into rank 0's
    folder (a default eval-<time> name is made per process), not a second one."""
    results, run_dir = short_run
    command = [sys.executable, "-m", "featlab.eval", f"ckpt_path={results['best_checkpoint']['path']}",
               "trainer.accelerator=cpu", "trainer.devices=2", "+trainer.strategy=ddp", "logger=csv",
               "data.num_workers=0"]
    before = set(run_dir.glob("eval-*"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(featlab.__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    made = sorted(set(run_dir.glob("eval-*")) - before)
    assert len(made) == 1 and (made[0] / "results.json").is_file()
    assert json.loads((made[0] / "results.json").read_text())["metrics"]["test/psnr"] > 0
    assert "testing on 2 devices" in done.stderr


def test_eval_missing_checkpoint_is_one_clear_line(capsys):
    from featlab.eval import main

    with pytest.raises(SystemExit):
        main(["ckpt_path=/nonexistent/last.ckpt"])
    assert "ckpt_path: checkpoint '/nonexistent/last.ckpt' does not exist" in capsys.readouterr().err


def _net_state(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, train_run):
    base = ["experiment=sisr_l1", *TINY[:4], "net=espcn", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "test_after_fit=false",
            "task.scheduler.kind=constant"]  # a schedule over max_epochs would differ between the runs
    _, straight = train_run([*base, "trainer.max_epochs=2"], run_dir=tmp_path / "straight")
    _, first = train_run([*base, "trainer.max_epochs=1"], run_dir=tmp_path / "first")
    _, resumed = train_run([*base, "trainer.max_epochs=2", f"ckpt_path={first}/checkpoints/last.ckpt"],
                           run_dir=tmp_path / "resumed")
    a, b = _net_state(straight / "checkpoints" / "last.ckpt"), _net_state(resumed / "checkpoints" / "last.ckpt")
    start = _net_state(first / "checkpoints" / "last.ckpt")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the second epoch changed the weights
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_tiny_overfit_loss_decreases():
    from hydra.utils import instantiate

    from featlab.optim import build_optimizer

    torch.manual_seed(0)
    cfg = compose(["experiment=sisr_l1", "net=edsr", "net.n_resblocks=1", "net.n_feats=16", "data.scale=2"])
    task = instantiate(cfg.task, _recursive_=False)
    batch = task.synthetic_batch(2, torch.device("cpu"), lr_size=8)
    batch["hr"] = torch.nn.functional.interpolate(batch["lr"], scale_factor=2, mode="nearest")
    opt = build_optimizer(task.optimizer_parameters(), lr=2e-3)
    losses = [task.bench_step(batch, opt, i).item() for i in range(60)]
    assert losses[-1] < 0.5 * losses[0]


def test_perceptual_term_gives_the_sr_network_gradients():
    from hydra.utils import instantiate

    cfg = compose(["experiment=sisr_dino", "pretrained=false", "net=espcn",
                   "loss.perceptual.backbone=vit_tiny_test", "loss.pixel.weight=0"])
    task = instantiate(cfg.task, _recursive_=False)
    assert list(task.loss.terms) == ["perceptual"]
    batch = task.synthetic_batch(1, torch.device("cpu"), lr_size=16)
    loss, _ = task.loss(task(batch["lr"]), batch["hr"])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.net.parameters())
    assert all(p.grad is None for p in task.loss.parameters())


def test_bad_inputs_are_one_line_config_errors(train_run, tmp_path):
    with pytest.raises(ConfigError, match="data.train_dirs"):
        train_run(["experiment=sisr_l1", "data=sr_folders", f"data.train_dirs=[{tmp_path}/missing]",
                   f"data.val_dirs={{x:{tmp_path}}}", "trainer.fast_dev_run=true"])
    with pytest.raises(ConfigError, match="layer_weights"):
        train_run(["experiment=sisr_dino_multi", "pretrained=false", "loss.perceptual.layer_weights=[1.0]",
                   "trainer.fast_dev_run=true", *TINY])
    with pytest.raises(ConfigError, match="feat2"):
        train_run(["experiment=sisr_dino", "pretrained=false", "loss.perceptual.layers=[feat9]",
                   "trainer.fast_dev_run=true", *TINY])
    with pytest.raises(ConfigError, match="data.hr_crop"):
        train_run(["experiment=sisr_l1", "data.hr_crop=30", "data.scale=4", "trainer.fast_dev_run=true"])


def test_failed_run_leaves_a_failed_results_file(train_run, tmp_path):
    with pytest.raises(ConfigError):
        train_run(["experiment=sisr_l1", "data.hr_crop=30", "trainer.fast_dev_run=true"], run_dir=tmp_path / "f")
    data = json.loads((tmp_path / "f" / "results.json").read_text())
    assert data["status"] == "failed" and "hr_crop" in data["error"]


def test_bench_reports_ratios_against_the_first_variant(capsys):
    from featlab.tools.bench import run_bench

    results = run_bench(["experiment=sisr_l1", *TINY[4:], "bench.steps=2", "bench.warmup=1", "bench.batch_size=2",
                         "+bench.batch_kwargs.lr_size=8", "bench.variants=[base,tv]",
                         "+bench.presets.tv=['+loss.tv._target_=featlab.losses.tv.TVLoss','+loss.tv.weight=0.1']"])
    assert [r.variant for r in results] == ["base", "tv"]
    assert all(r.images_per_s > 0 and r.tflops_per_step > 0 for r in results)
    out = capsys.readouterr().out
    assert "| base |" in out and "img/s ratio" in out

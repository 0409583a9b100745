"""Training entry point: compose -> instantiate -> fit -> test -> results.json.

``python train.py experiment=sisr_dino`` (or ``python -m featlab.train``) runs one job;
``-m`` runs a Hydra multirun in which a failing job is recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, read_write

from featlab.callbacks.faults import ENV as FAULT_ENV
from featlab.callbacks.faults import FaultInjector
from featlab.callbacks.images import ImageGridLogger
from featlab.callbacks.progress import ProgressLog
from featlab.callbacks.results import ResultsWriter, run_summary
from featlab.callbacks.resume import CheckpointOnSignal, RNGState
from featlab.checkpoints import SafeCheckpointIO
from featlab.cli import exit_on_user_error
from featlab.config import (
    check_config_choices,
    check_sweeper_storage,
    config_source,
    to_plain,
    user_config_dirs,
)
from featlab.data.build import build_datamodule
from featlab.data.images import ALL_REPORTS, DEFAULT_MAX_PIXELS, set_max_pixels
from featlab.errors import ConfigError, user_error_in
from featlab.extras import run_extras
from featlab.files import ensure_dir
from featlab.interface import Compilable
from featlab.loggers import AppendingCSVLogger, build_loggers, finish_wandb, flatten
from featlab.overrides import identifies_run
from featlab.runlog import record, run_log
from featlab.runs import RunLock, check_state_fits, resolve_resume

log = logging.getLogger("featlab")
SIGTERM_EXIT_CODE = 143

# Overrides that say where or how a job runs rather than what it studies: not tags, not run names.
def study_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define a run's place in a study (used for its W&B name and tags)."""
    return [o for o in overrides if identifies_run(o)]


def run_name_from(cfg: DictConfig, overrides: list[str]) -> str:
    if cfg.get("run_name"):
        return str(cfg.run_name)
    parts = [o.split("=", 1)[-1] if o.startswith("experiment=") else o for o in study_overrides(overrides)]
    name = ",".join(parts) or str(cfg.get("study") or "run")
    return re.sub(r"[^\w.,=\-\[\]]+", "_", name)[:128]


def hydra_context() -> tuple[Path | None, list[str], bool]:
    """(output dir, overrides, is multirun) when running under Hydra's main decorator."""
    if not HydraConfig.initialized():
        return None, [], False
    hc = HydraConfig.get()
    return Path(hc.runtime.output_dir), list(hc.overrides.task), hc.mode == RunMode.MULTIRUN


def build_callbacks(cfg: DictConfig, run_dir: Path, writer: ResultsWriter) -> list[L.Callback]:
    """The configured callbacks (``callbacks.<name>``: ``_target_`` entries, null drops one) plus the
    three that featlab's guarantees rest on: results.json (status, metrics, skips), the RNG state in
    checkpoints (exact resume) and the checkpoint on SIGTERM (pre-emption)."""
    callbacks: list[L.Callback] = []
    for cb_cfg in (cfg.get("callbacks") or {}).values():
        if cb_cfg is None:
            continue
        callback = instantiate(cb_cfg)
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = str(run_dir / "checkpoints")
        if isinstance(callback, ImageGridLogger) and callback.dir is None:
            callback.dir = run_dir / "images"
        callbacks.append(callback)
    callbacks += [writer, RNGState(), CheckpointOnSignal(run_dir)]
    if os.environ.get(FAULT_ENV):  # test-only: kill this process at a chosen point
        callbacks.append(FaultInjector(os.environ[FAULT_ENV]))
    return callbacks


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The configured Trainer with :class:`SafeCheckpointIO`: atomic checkpoint writes, weights-only reads."""
    plugins = [instantiate(p) for p in (trainer_cfg.get("plugins") or [])]
    plugins.append(SafeCheckpointIO())
    return instantiate(trainer_cfg, plugins=plugins, **kwargs)


def build_task(cfg: DictConfig, run_config: dict) -> L.LightningModule:
    """The task, remembering the run's resolved config and overrides (stored in checkpoints)."""
    task = instantiate(cfg.task, _recursive_=False)
    task.run_config = run_config
    if cfg.get("compile"):
        if isinstance(task, Compilable):
            task.compile_networks()
        else:
            log.warning("compile=true: %s has no compile_networks(); nothing compiled", type(task).__name__)
    return task


def run(cfg: DictConfig, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (and test) one configuration; returns the content of its ``results.json``."""
    hydra_dir, hydra_overrides, _ = hydra_context()
    overrides = list(overrides if overrides is not None else hydra_overrides)
    study = str(cfg.get("study") or "default")
    name = run_name_from(cfg, overrides)
    run_dir = ensure_dir(Path(run_dir or hydra_dir or Path(cfg.paths.output_root) / study / name))
    locks = [RunLock(run_dir).acquire()]  # before anything is written into the dir
    try:
        cfg.paths.output_dir = str(run_dir)  # configs may point into the run dir: ${paths.output_dir}/...
        # extras: the config tree printed, known warnings silenced (until the run ends)
        with run_extras(cfg.get("extras"), {k: v for k, v in to_plain(cfg).items() if k != "hydra"}), \
                ExitStack() as logs:
            # Rank 0 keeps the run's train.log; other DDP ranks would interleave their lines into it.
            if rank_zero_only.rank == 0:
                logs.enter_context(run_log(run_dir))
            return train_in(cfg, run_dir, overrides, study, name, locks, logs)
    finally:
        for lock in locks:
            lock.release()


def train_in(cfg: DictConfig, run_dir: Path, overrides: list[str], study: str, name: str,
             locks: list[RunLock], logs: ExitStack) -> dict[str, Any]:
    """The body of ``run`` once the run directory is locked (and its train.log open)."""
    plain = {k: v for k, v in to_plain(cfg).items() if k != "hydra"}
    plain["overrides"] = overrides

    ALL_REPORTS.clear()  # skipped-file reports of this run only
    set_max_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    writer = ResultsWriter(run_dir, plain)
    trainer: L.Trainer | None = None
    task: L.LightningModule | None = None
    loggers: list = []
    try:
        max_epochs, max_steps = trainer_length(cfg)
        resume = resolve_resume(cfg.get("ckpt_path"), run_dir, Path(cfg.paths.output_root), study, plain,
                                max_epochs, max_steps)
        if resume is None:
            refuse_to_overwrite(run_dir)
        elif resume.run_dir.resolve() != run_dir.resolve():
            log.info("continuing run dir %s (this launch's dir %s stays empty)", resume.run_dir, run_dir)
            locks.append(RunLock(resume.run_dir).acquire())
            run_dir = resume.run_dir
            cfg.paths.output_dir = plain["paths"]["output_dir"] = str(run_dir)
            writer.path = run_dir / writer.path.name
            if rank_zero_only.rank == 0:
                logs.close()
                logs.enter_context(run_log(run_dir))
        if resume is not None:
            log.info("resuming run dir %s from %s (step %s)", run_dir, resume.path, resume.checkpoint.get("global_step"))
            writer.resumed_from = str(resume.path)
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        torch.set_float32_matmul_precision("high")
        datamodule = build_datamodule(cfg.data)
        task = build_task(cfg, plain)
        if resume is not None:
            check_state_fits(resume.checkpoint, task.state_dict(), resume.path, task.frozen_state_prefixes())
        callbacks = build_callbacks(cfg, run_dir, writer)
        loggers = build_loggers(
            run_dir, run_name=name, group=study, tags=[study, *cfg.get("tags", []), *study_overrides(overrides)],
            flat_config=flatten({k: v for k, v in plain.items() if k != "overrides"}),
            **to_plain(cfg.logger),
        )
        keep_history(loggers, resume.checkpoint.get("global_step", 0) if resume is not None else -1)
        if any(isinstance(cb, ProgressLog) and cb.to_console for cb in callbacks):
            bar = {"enable_progress_bar": False}  # plain lines instead: the output is not a terminal
        else:
            bar = {}
        trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=str(run_dir), **bar)
        # Checkpoints are read through SafeCheckpointIO: weights-only on every Lightning version.
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume.path) if resume is not None else None)
        if cfg.get("test_after_fit", True) and not trainer.interrupted:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(task, datamodule=datamodule, ckpt_path=best or None)
    except BaseException as err:
        user = user_error_in(err) if isinstance(err, Exception) else None
        if writer.status not in ("failed", "interrupted"):  # failed before Lightning's hooks ran
            writer.status = "failed"
            writer.error = f"{type(user or err).__name__}: {user or err}"
            writer.write(trainer, None)
        if writer.error:  # the console gets it from the entry point
            record("featlab", logging.ERROR, f"run failed: {writer.error}")
        if user is not None and user is not err:
            raise user from None  # the user's mistake, not Hydra's or Lightning's wrapper
        if isinstance(err, SIGTERMException):
            # Lightning's SIGTERMException is a SystemExit without a code, i.e. exit status 0: a
            # scheduler would think the job finished. 143 = 128 + SIGTERM, the shell convention.
            raise SystemExit(SIGTERM_EXIT_CODE) from None
        raise
    finally:
        wandb = finish_wandb(loggers)
    results = writer.write(trainer, task)
    if wandb is not None and wandb.url:
        results["wandb_url"] = wandb.url
    elif wandb is not None and wandb.sync_command:
        results["wandb_sync"] = wandb.sync_command
    if rank_zero_only.rank == 0:
        log.info("%s", run_summary(results, writer.path, monitored_metric(cfg), wandb))
    return results


def trainer_length(cfg: DictConfig) -> tuple[int | None, int | None]:
    """``(max_epochs, max_steps)`` as numbers, or one line naming the key that is not one."""
    out = []
    for key in ("max_epochs", "max_steps"):
        value = cfg.trainer.get(key)
        if value is None:
            out.append(None)
            continue
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            raise ConfigError(f"trainer.{key}", f"must be a whole number, got {value!r}") from None
    return out[0], out[1]


def refuse_to_overwrite(run_dir: Path) -> None:
    """A fresh start never overwrites an earlier run's checkpoints in the same dir."""
    existing = sorted((run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").is_dir() else []
    if existing:
        raise ConfigError("ckpt_path", f"run dir '{run_dir}' already holds checkpoints ({existing[0].name}, ...) "
                                       "of an earlier run: continue it with ckpt_path=last, or choose another dir")


def keep_history(loggers: list, resumed_step: int) -> None:
    """CSV history: a resumed run keeps the rows up to its checkpoint; a fresh one starts empty."""
    for logger in loggers:
        if isinstance(logger, AppendingCSVLogger):
            logger.experiment.drop_after(resumed_step)


# Environment Lightning's subprocess launcher sets in the launching process (rank 0).
LIGHTNING_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def multirun_job_scope():
    """One multirun job = one DDP launch: ranks > 0 re-run THIS job (not the sweep) in THIS job's dir.

    Lightning starts ranks > 0 by re-running ``sys.argv`` with ``hydra.run.dir=<HydraConfig.run.dir>``;
    in a multirun that would be the whole sweep in another folder. Afterwards the process group and
    Lightning's env vars are dropped, so the next job starts its own ranks on a fresh port.
    """
    hc = HydraConfig.get()
    saved_argv, saved_env = list(sys.argv), {k: os.environ.get(k) for k in LIGHTNING_DDP_ENV}
    with read_write(hc):
        hc.run.dir = hc.runtime.output_dir
    sys.argv = [sys.argv[0], *hc.overrides.task, "hydra.mode=RUN"]
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.argv = saved_argv


def monitored_metric(cfg: DictConfig) -> str:
    """The metric the task's best checkpoint is chosen by (``task.monitor.metric``)."""
    return str(cfg.task.get("monitor", {}).get("metric", "val/loss"))


def objective(results: dict, cfg: DictConfig) -> float:
    """The task's monitored metric as a float: what Optuna (hydra/sweeper=optuna_tpe) optimises."""
    value = (results.get("metrics") or {}).get(monitored_metric(cfg))
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@hydra.main(config_path=config_source(), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any] | float | None:
    _, _, multirun = hydra_context()
    if not multirun:
        return exit_on_user_error(lambda: run(cfg))
    with multirun_job_scope():
        try:
            return objective(run(cfg), cfg)
        except Exception as err:  # a failed job is recorded in its results.json; the sweep goes on
            user = user_error_in(err)
            log.error("job failed: %s", user or f"{type(err).__name__}: {err}")
            if user is None and os.environ.get("FEATLAB_RAISE"):
                raise
            return None


def cli() -> None:
    """``featlab train`` / ``python train.py``: unknown group options, missing user config dirs and a
    sweeper storage Optuna cannot open fail as one line before Hydra composes anything."""
    argv = sys.argv[1:]

    def check() -> None:
        check_config_choices(argv, user_config_dirs(argv))
        check_sweeper_storage(argv)

    exit_on_user_error(check)
    main()


if __name__ == "__main__":
    cli()

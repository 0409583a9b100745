"""Evaluate a checkpoint: ``python -m featlab.eval ckpt_path=PATH [data=... other overrides]``.

The run's own overrides (stored in the checkpoint) are replayed and the ones given here win, so
``data=sr_folders data.test_dirs={set5:/path/Set5}`` evaluates the same model on other folders.
Trained weights come from the checkpoint; frozen loss backbones are not stored in it and are rebuilt
from the run's config (the same pretrained weights or local file the run used).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate

from featlab.callbacks.results import ResultsWriter
from featlab.checkpoints import load_checkpoint as read_checkpoint
from featlab.cli import exit_on_user_error, key_help, wants_help
from featlab.config import compose, process_suffix, to_plain
from featlab.data.build import build_datamodule
from featlab.data.images import DEFAULT_MAX_PIXELS, set_max_pixels
from featlab.errors import ConfigError
from featlab.files import ensure_dir
from featlab.loggers import build_loggers, finish_wandb, flatten
from featlab.nets.own_checkpoint import is_featlab_checkpoint
from featlab.nets.published import from_contents
from featlab.overrides import merge_overrides, split_overrides
from featlab.train import build_trainer, run_name_from, study_overrides

log = logging.getLogger("featlab.eval")
EVAL_DIR_ENV = "FEATLAB_EVAL_DIR"  # rank 0's output folder, inherited by the DDP ranks it starts


@dataclass
class EvalArgs:
    """eval's own keys; every other ``key=value`` is a training-config override (``featlab train --help``)."""

    ckpt_path: str = "???"       # training checkpoint to test (runs/<study>/<run>/checkpoints/*.ckpt)
    output: str | None = None    # folder for results.json; null: eval-<time> beside the checkpoints


def load_checkpoint(path: str) -> dict:
    if not path:
        raise ConfigError("ckpt_path", "give the checkpoint to evaluate: ckpt_path=runs/<study>/<run>/checkpoints/...")
    checkpoint = read_checkpoint(path, "ckpt_path")
    if not isinstance(checkpoint, dict):
        raise ConfigError("ckpt_path", f"'{path}' holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def published_net_overrides(net: Any, overrides: list[str]) -> list[str]:
    """Overrides evaluating a published SR file: the SISR task at the file's scale (a different
    ``data.scale`` given here is an error) with a pixel loss (no backbone to build)."""
    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    scale = int(getattr(net, "scale", 0) or 0)
    if "data.scale" in given and int(given["data.scale"]) != scale:
        raise ConfigError("data.scale", f"the weight file is a x{scale} network, but data.scale={given['data.scale']}")
    defaults = [f"data.scale={scale}"] + (["loss=l1"] if "loss" not in given else [])
    return ["task=sisr", *defaults, *overrides]


def evaluate(ckpt_path: str, overrides: list[str], output: str | None = None) -> dict[str, Any]:
    """Rebuild the run's config with ``overrides``, test the checkpoint, write results.json.

    A published SR weight file (Real-ESRGAN, SwinIR, ... read by :func:`featlab.nets.load`) is
    evaluated by the SISR task at the file's scale, e.g. with ``data=sr_folders``.
    """
    checkpoint = load_checkpoint(ckpt_path)
    published = None
    if not is_featlab_checkpoint(checkpoint):
        published = from_contents(checkpoint, f"'{ckpt_path}'", key="ckpt_path")
        overrides = published_net_overrides(published, overrides)
    stored = list((checkpoint.get("featlab_config") or {}).get("overrides") or [])
    merged = merge_overrides(stored, overrides)
    cfg = compose(merged)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{process_suffix()}"
    beside = Path(ckpt_path).resolve().parent  # a published file: next to it; a run's: in the run
    default_dir = beside / f"eval-{Path(ckpt_path).stem}-{stamp}" if published else beside.parent / f"eval-{stamp}"
    out_dir = Path(output or os.environ.get(EVAL_DIR_ENV) or default_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("output", f"'{out_dir}' is a file; output must be a folder (it is created if missing)")
    try:
        ensure_dir(out_dir)
    except ConfigError as err:
        raise ConfigError("output", str(err)) from None
    cfg.paths.output_dir = str(out_dir)
    set_max_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = build_datamodule(cfg.data)
    task = instantiate(cfg.task, _recursive_=False)
    if published is not None:
        task.net = published  # the task's own net config only shaped the (unused) default
    plain = {k: v for k, v in to_plain(cfg).items() if k != "hydra"}
    writer = ResultsWriter(out_dir, {**plain, "ckpt_path": str(ckpt_path), "overrides": overrides})
    # The run's logger config: test metrics go to csv/metrics.csv and a W&B run of the study's group
    # (tagged eval), beside the training run they evaluate.
    study = str(cfg.get("study") or "default")
    loggers = build_loggers(out_dir, run_name=f"eval:{run_name_from(cfg, merged)}", group=study,
                            tags=[study, "eval", *cfg.get("tags", []), *study_overrides(overrides)],
                            flat_config=flatten({**plain, "ckpt_path": str(ckpt_path)}), sweep=None,
                            **to_plain(cfg.logger))
    # The run's trainer config (accelerator, devices, precision, limit_test_batches, ...), without
    # what only training uses.
    trainer = build_trainer(cfg.trainer, logger=loggers or False, callbacks=[writer], default_root_dir=str(out_dir),
                            enable_checkpointing=False)
    if trainer.world_size > 1 and trainer.is_global_zero:
        log.warning("testing on %d devices: Lightning's distributed sampler repeats samples to fill the last "
                    "batches, so metrics can differ slightly from devices=1", trainer.world_size)
    launching = trainer.world_size > 1 and EVAL_DIR_ENV not in os.environ
    if launching:  # the ranks Lightning starts re-run this command: they must write where rank 0 does
        os.environ[EVAL_DIR_ENV] = str(out_dir)
    try:
        trainer.test(task, datamodule=datamodule, ckpt_path=None if published is not None else ckpt_path)
        results = writer.write(trainer, task)
    finally:
        wandb = finish_wandb(loggers)  # with results.json as the W&B summary (failed: marked failed)
        if launching:
            del os.environ[EVAL_DIR_ENV]
    if trainer.is_global_zero:
        print(json.dumps(results["metrics"], indent=2))
        print(f"results: {writer.path}")
        if wandb is not None:
            print(f"W&B: {wandb.url}" if wandb.url else f"W&B ran offline; upload with: {wandb.sync_command}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any] | int:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(key_help(EvalArgs, __doc__.split("\n\n")[0] + "\n\nAny other key=value overrides the "
                       "run's training config (data=..., trainer=..., logger=...): see featlab train --help."))
        return 0
    own, overrides = split_overrides(args, ("ckpt_path", "output"))
    return exit_on_user_error(lambda: evaluate(own.get("ckpt_path", ""), overrides, own.get("output")))


if __name__ == "__main__":
    main()

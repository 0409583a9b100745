"""Evaluate a checkpoint: ``python -m featlab.eval ckpt_path=PATH [data=... other overrides]``.

The run's own overrides (stored in the checkpoint) are replayed and the ones given here win, so
``data=sr_folders data.test_dirs={set5:/path/Set5}`` evaluates the same model on other folders.
Weights of every module, frozen loss backbones included, come from the checkpoint, so evaluation
forces ``pretrained=false`` and needs no download.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate

from featlab.callbacks.results import ResultsWriter
from featlab.checkpoints import SafeCheckpointIO
from featlab.checkpoints import load_checkpoint as read_checkpoint
from featlab.cli import exit_on_user_error
from featlab.config import compose
from featlab.errors import ConfigError
from featlab.overrides import merge_overrides, split_overrides
from featlab.tasks.base import to_plain

log = logging.getLogger("featlab.eval")


def load_checkpoint(path: str) -> dict:
    if not path:
        raise ConfigError("ckpt_path", "give the checkpoint to evaluate: ckpt_path=runs/<study>/<run>/checkpoints/...")
    checkpoint = read_checkpoint(path, "ckpt_path")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError("ckpt_path", f"'{path}' is not a featlab training checkpoint (no state_dict)")
    return checkpoint


def evaluate(ckpt_path: str, overrides: list[str], output: str | None = None) -> dict[str, Any]:
    """Rebuild the run's config with ``overrides``, test the checkpoint, write results.json."""
    checkpoint = load_checkpoint(ckpt_path)
    stored = list((checkpoint.get("featlab_config") or {}).get("overrides") or [])
    cfg = compose(merge_overrides(stored, [*overrides, "pretrained=false", "logger=csv"]))
    out_dir = Path(output) if output else Path(ckpt_path).resolve().parent.parent / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task, _recursive_=False)
    writer = ResultsWriter(out_dir, {**to_plain(cfg), "ckpt_path": str(ckpt_path), "overrides": overrides})
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                        logger=False, callbacks=[writer], plugins=[SafeCheckpointIO()], default_root_dir=str(out_dir),
                        enable_progress_bar=False, limit_test_batches=cfg.trainer.get("limit_test_batches"))
    trainer.test(task, datamodule=datamodule, ckpt_path=ckpt_path)
    results = writer.write(trainer, task)
    print(json.dumps(results["metrics"], indent=2))
    print(f"results: {writer.path}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    own, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv), ("ckpt_path", "output"))
    return exit_on_user_error(lambda: evaluate(own.get("ckpt_path", ""), overrides, own.get("output")))


if __name__ == "__main__":
    main()

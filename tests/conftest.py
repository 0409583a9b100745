"""Shared fixtures: small CPU runs of the real entry points in temporary folders."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Keep every test run small and quiet unless a test overrides these on purpose.
FAST = ["trainer=cpu", "logger=csv", "trainer.enable_progress_bar=false", "data.num_workers=0"]


END_TO_END_FIXTURES = {"train_run", "multirun"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that run the real entry point (through these fixtures) are end-to-end: mark them slow."""
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same RNG state, whatever ran before it (no order-dependent flakes)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_hydra_app_left():
    """A test that ran a Hydra app in-process (``featlab train --help``) leaves HydraConfig set;
    featlab.train.run would then read that app's output dir and overrides as its own."""
    yield
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None


@pytest.fixture
def single_thread():
    """Tiny tensors: a second OpenMP thread only spin-waits on a shared 2-core machine.

    Modules of tiny-op tests opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def train_run(tmp_path: Path) -> Callable[..., tuple[dict, Path]]:
    """``train_run([overrides]) -> (results, run_dir)``: featlab.train.run in a temp folder."""
    from featlab.config import compose
    from featlab.train import run

    def _run(overrides: list[str], run_dir: Path | None = None) -> tuple[dict, Path]:
        full = [*FAST, f"paths.output_root={tmp_path}", *overrides]
        cfg = compose(full)
        directory = run_dir or tmp_path / "run"
        return run(cfg, run_dir=directory, overrides=overrides), directory

    return _run

"""Published weight files in training (net.weights) and evaluation (featlab.eval ckpt_path=FILE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from featlab import nets
from featlab.cli import user_error_in
from featlab.config import compose
from featlab.errors import ConfigError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official" / "rrdbnet" / "checkpoint.pth"
# the fixture's hyperparameters: x4, 16 features, 2 RRDBs, growth 8
RRDB_16 = ["net=rrdb", "net.n_feats=16", "net.n_blocks=2", "net.growth=8", "data.scale=4"]
TINY_DATA = ["data.hr_crop=32", "data.batch_size=2", "data.repeat=1", "data.val_max_size=48"]


def test_net_weights_starts_training_from_the_published_file() -> None:
    cfg = compose(["experiment=sisr_dino", "pretrained=false", "loss.perceptual.backbone=vit_tiny_test",
                   *RRDB_16, f"net.weights={FIXTURE}"])
    task = instantiate(cfg.task, _recursive_=False)
    expected = nets.load(FIXTURE).state_dict()
    got = task.net.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert True  # the task decides train/eval; weights are what matter


@pytest.mark.slow
def test_fine_tune_run_and_its_checkpoint_reload(train_run) -> None:
    results, run_dir = train_run(["experiment=sisr_l1", *RRDB_16, *TINY_DATA, f"net.weights={FIXTURE}",
                                  "trainer.max_epochs=1", "trainer.limit_train_batches=2"])
    assert results["status"] == "finished", results.get("error")
    net = nets.load(run_dir / "checkpoints" / "last.ckpt")  # net.weights is not needed to rebuild it
    assert net.scale == 4 and type(net).__name__ == "RRDBNet"


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        (["net=edsr", "data.scale=4"], "net.weights", "holds a RRDBNet"),
        (["net=rrdb", "net.n_feats=16", "net.n_blocks=2", "net.growth=8", "data.scale=2"], "data.scale", "x4"),
        (["net=rrdb", "net.n_feats=8", "net.n_blocks=2", "net.growth=8", "data.scale=4"], "net.weights",
         "conv_first.weight"),
    ],
)
def test_mismatched_file_names_the_key(overrides: list[str], key: str, text: str) -> None:
    cfg = compose(["experiment=sisr_l1", *overrides, f"net.weights={FIXTURE}"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.task, _recursive_=False)
    error = user_error_in(info.value)  # Hydra wraps it; the command line prints this one line
    assert isinstance(error, ConfigError), info.value
    assert error.key == key and text in str(error) and "\n" not in str(error)


def test_classifier_as_net_weights_is_one_line(tmp_path: Path) -> None:
    import timm

    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    cfg = compose(["experiment=sisr_l1", *RRDB_16, f"net.weights={path}"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.task, _recursive_=False)
    error = user_error_in(info.value)
    assert isinstance(error, ConfigError) and error.key == "net.weights"
    assert "cannot tell the architecture" in str(error)


@pytest.mark.slow
def test_train_command_line_exits_2_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "train.py", "experiment=sisr_l1", *RRDB_16[:-1], "data.scale=2",
           f"net.weights={FIXTURE}", f"paths.output_root={tmp_path}", "trainer=cpu", "logger=csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert lines and "data.scale" in lines[-1] and "Traceback" not in proc.stderr


def _folder(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


@pytest.mark.slow
def test_eval_a_published_file_on_folders(tmp_path: Path) -> None:
    from featlab.eval import evaluate

    hr = _folder(tmp_path / "hr")
    folders = ["data=sr_folders", f"data.train_dirs=[{hr}]", f"data.val_dirs={{mine:{hr}}}", "data.num_workers=0"]
    results = evaluate(str(FIXTURE), folders, output=str(tmp_path / "eval"))
    assert "test/mine/psnr" in results["metrics"], sorted(results["metrics"])
    with pytest.raises(ConfigError, match="data.scale"):
        evaluate(str(FIXTURE), [*folders, "data.scale=2"], output=str(tmp_path / "eval2"))

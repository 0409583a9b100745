"""A checkpoint carrying a pickled ``os.system`` call must never run: every reader refuses it in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from featlab.backbones.checkpoints import read_checkpoint
from featlab.checkpoints import load_checkpoint
from featlab.errors import ConfigError
from featlab.tools.checkpoint import load_net_from_checkpoint

REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this calls ``os.system(command)``: what an attacker ships inside a checkpoint."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a featlab SISR checkpoint whose hyper-parameters carry the payload."""
    torch.save({
        "state_dict": {"net.conv.weight": torch.zeros(1)},
        "hyper_parameters": {"net": {"_target_": "featlab.nets.sr.espcn.ESPCN", "scale": 2},
                             "payload": _Payload(f"touch {marker}")},
        "featlab_config": {"payload": _Payload(f"touch {marker}")},
    }, path)
    return path


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return malicious_checkpoint(tmp_path / "evil.ckpt", marker), marker


def test_the_payload_is_real(hostile):
    """Control: the full unpickler does run it, so the refusals below are meaningful."""
    path, marker = hostile
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("reader", [load_checkpoint, load_net_from_checkpoint, read_checkpoint])
def test_every_loader_refuses_without_running_it(hostile, reader):
    path, marker = hostile
    with pytest.raises(ConfigError) as info:
        reader(path)
    message = str(info.value)
    assert "refusing" in message and "posix.system" in message and "\n" not in message
    assert not marker.exists()


def _cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_entry_points_refuse_it_with_one_line_and_exit_2(hostile, tmp_path):
    path, marker = hostile
    image = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(image)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    malicious_checkpoint(run_dir / "checkpoints" / "last.ckpt", marker)
    train = ["train.py", "trainer=cpu", "logger=csv", "experiment=sisr_l1", "net=espcn", "data.num_workers=0",
             f"paths.output_root={tmp_path}", f"hydra.run.dir={run_dir}"]
    commands = {
        "train ckpt_path=file": [*train, f"ckpt_path={path}"],
        "train ckpt_path=last": [*train, "ckpt_path=last"],
        "eval": ["-m", "featlab.eval", f"ckpt_path={path}", f"output={tmp_path / 'eval'}"],
        "upscale": ["-m", "featlab.tools.upscale", f"ckpt_path={path}", f"input={image}", f"output={tmp_path / 'up'}"],
        "export_onnx": ["-m", "featlab.tools.export_onnx", f"ckpt_path={path}", f"output={tmp_path / 'm.onnx'}"],
    }
    for name, args in commands.items():
        done = _cli(args)
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
        assert done.returncode == 2, (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (name, done.stderr[-2000:])
        assert len(errors) == 1 and "refusing" in errors[0] and "ckpt_path" in errors[0], (name, done.stderr[-2000:])
        assert not marker.exists(), name

"""A built wheel, installed outside the checkout, trains from any directory through ``featlab``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip wheel .`` then ``pip install --target`` (no deps: this interpreter has them)."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(work / "dist"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (work / "dist").glob("featlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.removeprefix("featlab/conf/") for n in names if n.startswith("featlab/conf/") and n.endswith(".yaml")}
    in_checkout = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert packaged == in_checkout
    assert "hydra_plugins/featlab_local_gpus/local_gpus_launcher.py" in names  # hydra/launcher=local_gpus
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(work / "site"), str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return work / "site"


def featlab(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # The installed copy, not the checkout: PYTHONPATH holds only the --target folder.
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    env.pop("FEATLAB_CONF", None)
    return subprocess.run([str(site / "bin" / "featlab"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_installed_featlab_trains_from_any_directory(installed, tmp_path):
    probe = featlab(installed, tmp_path, "--help")
    assert probe.returncode == 0 and "upscale" in probe.stdout
    out = tmp_path / "runs"
    run = featlab(installed, tmp_path, "train", "experiment=sisr_l1", "pretrained=false", "trainer=cpu",
                  "logger=csv", "trainer.fast_dev_run=true", "data.num_workers=0", "data.hr_crop=32",
                  "data.batch_size=2", "data.val_max_size=48", "net.n_resblocks=1", "net.n_feats=8",
                  f"paths.output_root={out}", "trainer.enable_progress_bar=false")
    assert run.returncode == 0, run.stderr[-3000:]
    (results,) = out.glob("**/results.json")
    assert json.loads(results.read_text())["status"] == "finished"
    source = subprocess.run([sys.executable, "-c", "import featlab.config as c; print(c.config_dir())"],
                            env={**os.environ, "PYTHONPATH": str(installed)}, cwd=tmp_path,
                            capture_output=True, text=True)
    assert source.stdout.strip().startswith(str(installed))


def test_installed_featlab_takes_a_user_config_dir(installed, tmp_path):
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "my_l1.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /experiment: sisr_l1\nstudy: my_study\n")
    shown = featlab(installed, tmp_path, "train", "experiment=my_l1", "--config-dir", str(tmp_path / "mine"),
                    "--cfg", "job")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "study: my_study" in shown.stdout
    missing = featlab(installed, tmp_path, "train", "--config-dir", str(tmp_path / "absent"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0

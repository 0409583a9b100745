"""Output paths that cannot be written (a file where a folder must be, a folder where a file must be):
each tool stops with one line naming the path, exit 2, and leaves what was there untouched."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featlab.nets.sr import EDSR
from featlab.tools.checkpoint import save_net_checkpoint

EDSR_CFG = {"_target_": "featlab.nets.sr.edsr.EDSR", "scale": 2, "n_resblocks": 1, "n_feats": 8}


@pytest.fixture
def setup(tmp_path):
    ckpt = save_net_checkpoint(tmp_path / "net.ckpt", EDSR_CFG, EDSR(2, n_resblocks=1, n_feats=8))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in.png")
    (tmp_path / "blocker").write_text("a file the user had")
    (tmp_path / "folder.onnx").mkdir()
    return tmp_path, ckpt


def _tool(name):
    if name == "export":
        from featlab.tools.export_onnx import main
    else:
        from featlab.tools.upscale import main
    return main


@pytest.mark.parametrize("tool, output, words", [
    ("export", "blocker/model.onnx", "in the way"),
    ("export", "folder.onnx", "folder of that name"),
    ("upscale", "blocker/out.png", "parent of it is a file"),
    ("upscale-folder", "blocker", "is a file"),
])
def test_unwritable_output_is_one_line(setup, tool, output, words, capsys):
    tmp_path, ckpt = setup
    source = tmp_path if tool == "upscale-folder" else tmp_path / "in.png"
    argv = [f"ckpt_path={ckpt}", f"output={tmp_path / output}"]
    if tool != "export":
        argv.append(f"input={source}")
    assert _tool(tool.split("-")[0])(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and str(tmp_path) in err
    assert (tmp_path / "blocker").read_text() == "a file the user had"
    assert (tmp_path / "folder.onnx").is_dir() and not any((tmp_path / "folder.onnx").iterdir())

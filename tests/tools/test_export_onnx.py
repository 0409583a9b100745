"""ONNX export: dynamic batch/height/width, outputs match PyTorch at untraced sizes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from featlab.nets.sr import EDSR, SwinIR  # noqa: E402
from featlab.tools.checkpoint import save_net_checkpoint  # noqa: E402
from featlab.tools.export_onnx import export_onnx, main, onnx_max_abs_diff, written_opset  # noqa: E402

EDSR_CFG = {"_target_": "featlab.nets.sr.edsr.EDSR", "scale": 2, "n_resblocks": 1, "n_feats": 8}
SIZES = [(1, 13, 17), (3, 40, 29)]  # (batch, h, w), neither is the traced (2, 19, 21)


def _dims_are_symbolic(path) -> bool:
    import onnxruntime as ort

    shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    return all(isinstance(shape[i], str) for i in (0, 2, 3))


def test_cli_exports_tiny_edsr_and_matches_pytorch(tmp_path, capsys):
    torch.manual_seed(0)
    net = EDSR(2, n_resblocks=1, n_feats=8)
    ckpt = save_net_checkpoint(tmp_path / "edsr.ckpt", EDSR_CFG, net)
    out = tmp_path / "onnx" / "edsr.onnx"
    assert main([f"ckpt_path={ckpt}", f"output={out}"]) == 0
    assert written_opset(out) == 18
    assert "max abs diff" in capsys.readouterr().out
    assert _dims_are_symbolic(out)
    for b, h, w in SIZES:
        assert onnx_max_abs_diff(net, out, torch.rand(b, 3, h, w)) < 1e-4


def test_swinir_exports_with_window_padding_at_dynamic_sizes(tmp_path):
    torch.manual_seed(0)
    net = SwinIR(3, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4).eval()
    path = export_onnx(net, tmp_path / "swinir.onnx")
    assert _dims_are_symbolic(path)
    for b, h, w in SIZES:
        assert onnx_max_abs_diff(net, path, torch.rand(b, 3, h, w)) < 1e-4


def test_legacy_exporter_also_has_dynamic_axes(tmp_path):
    net = EDSR(2, n_resblocks=1, n_feats=8)
    path = export_onnx(net, tmp_path / "legacy.onnx", opset=17, exporter="legacy")
    assert written_opset(path) == 17
    assert _dims_are_symbolic(path)
    assert onnx_max_abs_diff(net, path, torch.rand(*SIZES[1][:1], 3, *SIZES[1][1:])) < 1e-4


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main([f"ckpt_path={tmp_path / 'none.ckpt'}"]) == 2
    assert capsys.readouterr().err.startswith("error: ckpt_path:")
    ckpt = save_net_checkpoint(tmp_path / "e.ckpt", EDSR_CFG, EDSR(2, n_resblocks=1, n_feats=8))
    assert main([f"ckpt_path={ckpt}", "exporter=tensorrt", f"output={tmp_path / 'x.onnx'}"]) == 2
    assert capsys.readouterr().err.startswith("error: exporter:")

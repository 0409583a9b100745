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


PORTABLE_NETS = {
    "swinir": {"scale": 2, "embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4},
    "nafnet": {"scale": 1, "width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]},
    "scunet": {"scale": 1, "dim": 16, "config": [2] * 7, "head_dim": 8, "window_size": 4},
}


@pytest.mark.parametrize("name", sorted(PORTABLE_NETS))
def test_portable_export_uses_only_conservative_operators(name, tmp_path):
    """Shifted-window masks (Concat/Gather, no Range) and LayerNorm as arithmetic: nothing else is left,
    and the file still computes the network at untraced sizes."""
    from featlab.nets.sr import build_sr_net
    from featlab.tools.export_onnx import nonportable_ops, onnx_inventory

    torch.manual_seed(0)
    net = build_sr_net(name, **PORTABLE_NETS[name]).eval()
    default = export_onnx(net, tmp_path / "default.onnx", exporter="legacy")
    portable = export_onnx(net, tmp_path / "portable.onnx", exporter="legacy", portable=True)
    assert "LayerNormalization" in onnx_inventory(default)
    assert nonportable_ops(portable) == []
    for b, h, w in [(1, 16, 16), (2, 23, 37)]:
        assert onnx_max_abs_diff(net, portable, torch.rand(b, 3, h, w)) < 1e-4
    assert any(isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "LayerNorm2d" for m in net.modules())


def test_portable_cli_says_what_remains(tmp_path, capsys):
    ckpt = save_net_checkpoint(tmp_path / "e.ckpt", EDSR_CFG, EDSR(2, n_resblocks=1, n_feats=8))
    assert main([f"ckpt_path={ckpt}", f"output={tmp_path / 'p.onnx'}", "portable=true", "exporter=legacy"]) == 0
    assert "portable: every operator is in the conservative set" in capsys.readouterr().out

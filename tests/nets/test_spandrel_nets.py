"""Architectures featlab lacks load through spandrel (optional extra) with featlab's net interface."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from featlab import nets

spandrel = pytest.importorskip("spandrel")


def _compact_file(tmp_path: Path, scale: int = 2) -> tuple[Path, torch.nn.Module]:
    """A tiny Real-ESRGAN 'Compact' (SRVGGNet) built with spandrel's own code, saved as a bare
    state dict (the layout of realesr-general-x4v3.pth)."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()
    path = tmp_path / "compact.pth"
    torch.save({"params": model.state_dict()}, path)
    return path, model


def test_spandrel_only_architecture_loads_with_featlab_interface(tmp_path: Path) -> None:
    path, reference = _compact_file(tmp_path)
    net = nets.load(path)
    assert (net.scale, net.in_channels, net.architecture) == (2, 3, "Compact")
    assert not net.training
    x = torch.rand(1, 3, 9, 7) * 1.5 - 0.25  # outside [0, 1]: the output must not be clamped
    with torch.no_grad():
        out, ref = net(x), reference(x)
    assert out.shape == (1, 3, 18, 14)
    assert torch.allclose(out, ref, atol=1e-6)
    assert out.min() < 0 or out.max() > 1  # not clamped


def test_span_pads_to_its_size_requirements(tmp_path: Path) -> None:
    from spandrel.architectures.SPAN import SPAN

    model = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4).eval()
    path = tmp_path / "span.pth"
    torch.save(model.state_dict(), path)
    net = nets.load(path)
    assert net.scale == 4
    with torch.no_grad():
        assert net(torch.rand(1, 3, 5, 6)).shape == (1, 3, 20, 24)


def test_featlab_layouts_still_build_featlab_nets() -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "official" / "swinir_light" / "checkpoint.pth"
    assert type(nets.load(fixture)).__module__ == "featlab.nets.sr.swinir"

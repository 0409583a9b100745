"""Tiled inference equals full-image inference for nets whose receptive field fits the overlap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from featlab.errors import ConfigError
from featlab.nets.sr import EDSR, ESPCN, RRDBNet, SwinIR
from featlab.tools.tiled import tile_spans, tiled_forward


def _full_and_tiled(net: nn.Module, lr: torch.Tensor, scale: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = net.eval()
    with torch.no_grad():
        full = net(lr)
    return full, tiled_forward(net, lr, scale, **kw)


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "align"),
    [(100, 32, 8, 1), (100, 32, 8, 8), (37, 16, 4, 4), (130, 64, 16, 64), (1000, 128, 16, 8), (10, 16, 4, 1)],
)
def test_tile_spans_cover_overlap_and_align(size, tile, overlap, align):
    spans = tile_spans(size, tile, overlap, align)
    covered = torch.zeros(size, dtype=torch.bool)
    for start, length in spans:
        assert 0 < length <= tile and start + length <= size
        covered[start : start + length] = True
    assert covered.all() and spans[-1][0] + spans[-1][1] == size
    for (a, la), (b, _) in zip(spans, spans[1:]):
        assert a + la - b >= overlap
    if tile - overlap >= align:
        assert all(start % align == 0 for start, _ in spans)


def test_espcn_feathered_tiles_equal_full_image():
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 70, 53)  # batch of 2, uneven tile count per batch of 3 tiles
    full, tiled = _full_and_tiled(
        ESPCN(2, n_feats=8, n_feats_mid=4), lr, 2, tile=32, overlap=16, batch_tiles=3
    )
    assert tiled.shape == full.shape
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_edsr_crop_blend_is_exact_and_feather_close():
    torch.manual_seed(0)
    net, lr = EDSR(3, n_resblocks=2, n_feats=8), torch.rand(1, 3, 70, 53)
    full, cropped = _full_and_tiled(net, lr, 3, tile=32, overlap=16, blend="crop")
    torch.testing.assert_close(cropped, full, atol=1e-5, rtol=0)
    _, feathered = _full_and_tiled(net, lr, 3, tile=32, overlap=16)
    torch.testing.assert_close(feathered, full, atol=5e-3, rtol=0)


def test_scale_one_nets():
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 90, 61)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 5, padding=2))
    full, tiled = _full_and_tiled(conv, lr, 1, tile=40, overlap=16)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)
    # Real-ESRGAN x1 folds 4x4 pixels: tiles start on that grid, so the result is still exact
    rrdb = RRDBNet(1, n_feats=8, n_blocks=0, growth=4)
    full, tiled = _full_and_tiled(rrdb, lr, 1, tile=48, overlap=32, blend="crop")
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_windowed_transformer_tiles_stay_close():
    torch.manual_seed(0)
    net = SwinIR(2, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4)
    full, tiled = _full_and_tiled(net, torch.rand(1, 3, 45, 38), 2, tile=32, overlap=16)
    assert (tiled - full).abs().max() < 1e-2


def test_image_smaller_than_a_tile_is_one_forward():
    net = EDSR(2, n_resblocks=1, n_feats=8).eval()
    lr = torch.rand(1, 3, 20, 9)
    full, tiled = _full_and_tiled(net, lr, 2, tile=32, overlap=8)
    assert torch.equal(full, tiled)
    # one side larger than the tile, the other smaller
    full, tiled = _full_and_tiled(net, torch.rand(1, 3, 70, 9), 2, tile=32, overlap=16, blend="crop")
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_bad_tiling_arguments_are_config_errors():
    net, lr = EDSR(2, n_resblocks=1, n_feats=8), torch.rand(1, 3, 40, 40)
    with pytest.raises(ConfigError, match="^tile:"):
        tiled_forward(net, lr, 2, tile=16, overlap=16)
    with pytest.raises(ConfigError, match="^scale:"):
        tiled_forward(net, lr, 3, tile=16, overlap=4)
    with pytest.raises(ConfigError, match="^blend:"):
        tiled_forward(net, lr, 2, tile=16, overlap=4, blend="mean")


# -- the upscale command ---------------------------------------------------------------------
def _checkpoint(tmp_path):
    from featlab.tools.checkpoint import save_net_checkpoint

    cfg = {"_target_": "featlab.nets.sr.espcn.ESPCN", "scale": 2, "n_feats": 8, "n_feats_mid": 4}
    return save_net_checkpoint(tmp_path / "net.ckpt", cfg, ESPCN(2, n_feats=8, n_feats_mid=4))


def test_upscale_folder_writes_pngs(tmp_path):
    import numpy as np
    from PIL import Image

    from featlab.tools.upscale import main

    images = tmp_path / "in"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(images / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (9, 50), dtype=np.uint8)).save(images / "sub" / "b.png")  # grey
    (images / "broken.png").write_bytes(b"not an image")
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "out"
    assert main([f"ckpt_path={ckpt}", f"input={images}", f"output={out}", "tile=16", "overlap=4"]) == 0
    assert Image.open(out / "a.png").size == (60, 80)
    assert Image.open(out / "sub" / "b.png").size == (100, 18)
    assert not (out / "broken.png").exists()
    # a single file works too
    assert main([f"ckpt_path={ckpt}", f"input={images / 'a.jpg'}", f"output={tmp_path / 'one'}"]) == 0
    assert (tmp_path / "one" / "a.png").is_file()


def test_upscale_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    from featlab.tools.upscale import main

    ckpt = _checkpoint(tmp_path)
    cases = [
        ([f"ckpt_path={tmp_path / 'none.ckpt'}", f"input={tmp_path}", "output=o"], "ckpt_path:"),
        ([f"ckpt_path={ckpt}", f"input={tmp_path / 'missing'}", "output=o"], "input:"),
        (
            [f"ckpt_path={ckpt}", f"input={tmp_path}", "output=o", "tile=8", "overlap=8"],
            "input:",
        ),  # no images
        ([f"ckpt_path={ckpt}", f"input={tmp_path}"], "output:"),
    ]
    for argv, prefix in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {prefix}") and err.count("\n") == 1, err


@pytest.mark.slow
def test_upscale_module_entry_point_has_no_traceback(tmp_path):
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "featlab.tools.upscale",
        f"ckpt_path={tmp_path}/x.ckpt",
        "input=.",
        "output=o",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "ckpt_path" in proc.stderr


def _images(folder, names):
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_upscale_never_overwrites_its_input(tmp_path, capsys):
    from featlab.tools.upscale import main

    ckpt = _checkpoint(tmp_path)
    images = _images(tmp_path / "in", ["a.png", "b.jpg"])
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    assert main([f"ckpt_path={ckpt}", f"input={images}", f"output={images}"]) == 2
    assert "output: " in capsys.readouterr().err
    # a single PNG upscaled into its own folder would replace itself
    assert main([f"ckpt_path={ckpt}", f"input={images / 'a.png'}", f"output={images}"]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    clash = _images(tmp_path / "clash", ["c.png", "c.jpg"])
    assert main([f"ckpt_path={ckpt}", f"input={clash}", f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert "both be written to" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert before == {p.name: p.read_bytes() for p in images.iterdir()}


def test_upscale_takes_a_published_weight_file(tmp_path, capsys):
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    from featlab import nets
    from featlab.tools.upscale import main, to_tensor

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "official" / "rrdbnet" / "checkpoint.pth"
    images = _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    assert main([f"ckpt_path={fixture}", f"input={images}", f"output={out}", "tile=8", "overlap=4"]) == 0
    assert "[1/1]" in capsys.readouterr().out
    got = torch.from_numpy(np.array(Image.open(out / "a.png"))).permute(2, 0, 1).float()
    with torch.no_grad():
        full = nets.load(fixture)(to_tensor(np.array(Image.open(images / "a.png"))))
    expected = full[0].clamp(0, 1).mul(255).round()
    # tiles of 8 px with 4 px overlap on a tiny net: equal to the untiled forward away from seams
    assert got.shape == expected.shape == (3, 48, 40)
    assert (got - expected).abs().max() <= 1


@pytest.mark.parametrize("options", [["precision=bf16"], pytest.param(["compile=true"], marks=pytest.mark.slow)])
def test_upscale_fast_paths_match_fp32(tmp_path, options):
    """The deployment paths deploy-bench measures give the fp32 picture: compile exactly (8-bit
    rounding aside), bf16 within a few grey levels. (compile on ESPCN and one tile shape: inductor
    takes minutes per shape for a transformer on 2 cores.)"""
    import numpy as np
    from PIL import Image

    from featlab.tools.upscale import main

    compiling = options == ["compile=true"]
    fixture = (_checkpoint(tmp_path) if compiling else
               Path(__file__).resolve().parents[1] / "fixtures" / "official" / "swinir_light" / "checkpoint.pth")
    images = _images(tmp_path / "in", ["a.png"])
    pictures = []
    for name, extra in (("fp32", []), ("fast", options)):
        tiling = ["tile=16", "overlap=4"] if compiling else ["tile=8", "overlap=4"]
        assert main([f"ckpt_path={fixture}", f"input={images}", f"output={tmp_path / name}", *tiling, *extra]) == 0
        pictures.append(np.asarray(Image.open(tmp_path / name / "a.png"), dtype=np.float64))
    error = np.abs(pictures[0] - pictures[1])
    assert error.max() <= (1 if compiling else 12) and error.mean() < 1.5


def test_upscale_unknown_precision_is_one_line(tmp_path, capsys):
    from featlab.tools.upscale import main

    images = _images(tmp_path / "in", ["a.png"])
    assert main([f"ckpt_path={_checkpoint(tmp_path)}", f"input={images}", f"output={tmp_path / 'o'}", "precision=fp16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "precision" in err and "bf16" in err

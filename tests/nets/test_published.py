"""featlab.nets.load on files written by the official code: every hyperparameter is read from the
state dict and the network reproduces the official output (fixtures in tests/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from featlab import nets
from featlab.errors import ConfigError
from featlab.nets.published import ARCHITECTURES, PUBLISHED_SIZES, build_published_size, unwrap

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SR_FIXTURES = sorted(
    p
    for folder in ("official", "official_variants")
    for p in (FIXTURES / folder).iterdir()
    if p.is_dir() and not p.name.startswith(("dino", "edgeface"))
)


@pytest.mark.parametrize("folder", SR_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_file_reproduces_official_output(folder: Path) -> None:
    net = nets.load(folder / "checkpoint.pth")
    assert not net.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in net.parameters())
    x, expected = torch.load(folder / "input.pt"), torch.load(folder / "output.pt")
    with torch.no_grad():
        out = net(x)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-5
    config = json.loads((folder / "config.json").read_text())
    scale = config["constructor_args"].get("scale", config["constructor_args"].get("upscale", 1))
    assert net.scale == scale


def test_hyperparameters_read_from_the_state_dict() -> None:
    net = nets.load(FIXTURES / "official_variants" / "swinir_gray_pixelshuffle_x3" / "checkpoint.pth")
    assert (net.scale, net.in_channels, net.window_size, net.upsampler) == (3, 1, 3, "pixelshuffle")
    assert [len(layer.stage.blocks) for layer in net.layers] == [1, 3]
    assert [layer.stage.blocks[0].attn.num_heads for layer in net.layers] == [1, 2]
    net = nets.load(FIXTURES / "official" / "rrdbnet_x2" / "checkpoint.pth")
    assert (net.scale, net.fold, len(net.body)) == (2, 2, 2)


def test_params_ema_wins_over_params(tmp_path: Path) -> None:
    # rrdbnet_gray_x4 stores zeros under 'params': the fixture test above passing proves EMA was used
    ckpt = torch.load(FIXTURES / "official_variants" / "rrdbnet_gray_x4" / "checkpoint.pth")
    assert set(ckpt) == {"params", "params_ema"}
    state = unwrap(ckpt)
    assert state["conv_first.weight"].abs().sum() > 0
    only_params = tmp_path / "params.pth"
    torch.save({"params": ckpt["params_ema"]}, only_params)
    assert nets.load(only_params).scale == 4


def test_name_disambiguates_and_asserts() -> None:
    path = FIXTURES / "official" / "edsr" / "checkpoint.pth"
    assert type(nets.load(path, name="edsr")).__name__ == "EDSR"
    with pytest.raises(ConfigError, match="not a swinir file"):
        nets.load(path, name="swinir")
    with pytest.raises(ConfigError, match="unknown architecture 'esrgan'"):
        nets.load(path, name="esrgan")


def test_overrides_replace_what_a_file_cannot_record() -> None:
    path = FIXTURES / "official" / "edsr" / "checkpoint.pth"
    assert nets.load(path).img_range == 255.0
    assert nets.load(path, img_range=1.0).img_range == 1.0


def test_featlab_checkpoint_loads(tmp_path: Path) -> None:
    from featlab.nets.sr import RRDBNet
    from featlab.tools.checkpoint import save_net_checkpoint

    net = RRDBNet(2, n_feats=8, n_blocks=1, growth=4)
    cfg = {"_target_": "featlab.nets.sr.rrdb.RRDBNet", "scale": 2, "n_feats": 8, "n_blocks": 1, "growth": 4}
    path = save_net_checkpoint(tmp_path / "own.ckpt", cfg, net)
    loaded = nets.load(path)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x), net.eval()(x))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bad_files_are_one_line_config_errors(tmp_path: Path) -> None:
    good = (FIXTURES / "official" / "rrdbnet" / "checkpoint.pth").read_bytes()
    cases = {
        "missing": tmp_path / "nope.pth",
        "not a checkpoint": _write(tmp_path / "text.pth", b"hello, I am not a tensor file"),
        "truncated": _write(tmp_path / "cut.pth", good[: len(good) // 2]),
    }
    for label, path in cases.items():
        with pytest.raises(ConfigError) as info:
            nets.load(path)
        assert "\n" not in str(info.value), label
        assert info.value.key == "weights", label


def test_unknown_architecture_lists_the_known_ones(tmp_path: Path) -> None:
    import timm

    classifier = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "resnet.pth"
    torch.save(classifier.state_dict(), path)
    with pytest.raises(ConfigError, match="cannot tell the architecture") as info:
        nets.load(path)
    assert all(name in str(info.value) for name in ARCHITECTURES)


def test_code_carrying_pickle_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    path = tmp_path / "evil.pth"
    torch.save({"params": {"x": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(ConfigError, match="weights_only"):
        nets.load(path)


def test_mismatched_tensor_names_the_key(tmp_path: Path) -> None:
    state = unwrap(torch.load(FIXTURES / "official" / "rrdbnet" / "checkpoint.pth"))
    state["conv_hr.weight"] = state["conv_hr.weight"][:, :4]
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError, match="conv_hr.weight"):
        nets.load(path)


@pytest.mark.parametrize("label", [k for k, v in PUBLISHED_SIZES.items() if v[2] is not None])
def test_parameter_counts_match_the_official_figures(label: str) -> None:
    with torch.device("meta"):
        net = build_published_size(label)
    assert sum(p.numel() for p in net.parameters()) == PUBLISHED_SIZES[label][2]

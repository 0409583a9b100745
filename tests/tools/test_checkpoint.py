"""Checkpoint -> network: prefixes, configs, failure messages, and key=value argument parsing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf

from featlab.cli import parse_key_values, run_cli
from featlab.errors import ConfigError
from featlab.nets.sr import EDSR
from featlab.tools.checkpoint import load_net_from_checkpoint, save_net_checkpoint

CFG = {"_target_": "featlab.nets.sr.edsr.EDSR", "scale": 2, "n_resblocks": 1, "n_feats": 8}


def _net() -> EDSR:
    torch.manual_seed(0)
    return EDSR(2, n_resblocks=1, n_feats=8)


def _lightning_like(net: torch.nn.Module, prefix: str = "net.", hparams: dict | None = None) -> dict:
    """What the SISR task saves: net weights, a frozen loss backbone, optimiser state, hparams."""
    state = {prefix + k: v for k, v in net.state_dict().items()}
    state["loss.perceptual.backbone.weight"] = torch.zeros(4)
    hp = {"net": dict(CFG), "scale": 2, "loss": {"pixel": {"weight": 1.0}}} if hparams is None else hparams
    return {
        "epoch": 3,
        "global_step": 10,
        "state_dict": state,
        "hyper_parameters": hp,
        "optimizer_states": [],
    }


def test_loads_net_weights_and_ignores_other_prefixes(tmp_path):
    net = _net()
    torch.save(_lightning_like(net), tmp_path / "last.ckpt")
    loaded, hparams = load_net_from_checkpoint(tmp_path / "last.ckpt")
    assert isinstance(loaded, EDSR) and not loaded.training
    assert hparams["scale"] == 2 and hparams["net"]["n_feats"] == 8
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))


def test_torch_compile_prefix_and_unresolved_scale(tmp_path):
    hp = {"net": {**CFG, "scale": "${data.scale}"}, "scale": 2}
    torch.save(_lightning_like(_net(), prefix="net._orig_mod.", hparams=hp), tmp_path / "c.ckpt")
    loaded, _ = load_net_from_checkpoint(tmp_path / "c.ckpt")
    assert loaded.scale == 2


def test_hparams_pickled_as_omegaconf_are_refused(tmp_path):
    """Objects in a checkpoint need the full unpickler, which could run code: one line, no retry."""
    hp = {"net": OmegaConf.create(CFG), "scale": 2}
    torch.save(_lightning_like(_net(), hparams=hp), tmp_path / "omega.ckpt")
    with pytest.raises(ConfigError, match="refusing .* omegaconf"):
        load_net_from_checkpoint(tmp_path / "omega.ckpt")


def test_save_net_checkpoint_round_trip(tmp_path):
    path = save_net_checkpoint(tmp_path / "sub" / "n.ckpt", CFG, _net())
    loaded, hparams = load_net_from_checkpoint(path)
    assert hparams["scale"] == 2 and isinstance(loaded, EDSR)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("garbage", "not a readable torch checkpoint"),
        ({"state_dict": {}, "hyper_parameters": {"lr": 1e-3}}, "no network config"),
        ({"state_dict": {"loss.w": torch.zeros(1)}, "hyper_parameters": {"net": CFG}}, "no weights under"),
        ({"state_dict": {"net.head.weight": torch.zeros(1)}, "hyper_parameters": {"net": CFG}}, "do not fit"),
        ({"state_dict": {}, "hyper_parameters": {"net": {"_target_": "featlab.nope.Net"}}}, "cannot build"),
    ],
)
def test_bad_checkpoints_name_ckpt_path(tmp_path, content, message):
    path = tmp_path / "bad.ckpt"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ConfigError) as info:
        load_net_from_checkpoint(path)
    assert str(info.value).startswith("ckpt_path:") and message in str(info.value)


@dataclass
class _Args:
    ckpt_path: str = "???"
    tile: int = 128
    verify: bool = True


def test_key_value_parsing_types_and_errors(capsys):
    args = parse_key_values(_Args, ["ckpt_path=a.ckpt", "tile=64", "verify=false"])
    assert args == _Args("a.ckpt", 64, False)
    for argv, key in [
        ([], "ckpt_path"),
        (["ckpt_path=a", "tiles=3"], "tiles"),
        (["ckpt_path=a", "tile=big"], "tile"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_key_values(_Args, argv)
        assert str(info.value).startswith(f"{key}:"), str(info.value)
    with pytest.raises(ConfigError, match="key=value"):
        parse_key_values(_Args, ["a.ckpt"])
    assert run_cli(lambda a: None, _Args, ["tile=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ckpt_path" in err

"""SR / restoration networks: shapes at every scale and odd sizes, published sizes, configs,
errors, gradients, bf16 + channels_last, and the shifted-window mask against a reference."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from featlab.errors import ConfigError
from featlab.nets.published import build_net
from featlab.nets.sr import SR_NETS, build_sr_net
from featlab.nets.sr.swin import WindowAttention, shifted_window_mask, use_fused_attention, window_partition

CONF = Path(__file__).resolve().parents[2] / "conf" / "net"

TINY = {
    "espcn": dict(n_feats=8, n_feats_mid=4),
    "srcnn": dict(n_feats=8, n_feats_mid=4),
    "fsrcnn": dict(d=8, s_feats=4, m=1),
    "edsr": dict(n_resblocks=2, n_feats=8),
    "rdn": dict(n_feats=8, n_blocks=2, n_layers=2, growth=4),
    "rrdb": dict(n_feats=8, n_blocks=1, growth=4),
    "swinir": dict(embed_dim=12, depths=(2,), num_heads=(2,), window_size=4),
    "nafnet": dict(width=4, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1)),
    "scunet": dict(config=(2, 1, 1, 1, 1, 1, 1), dim=8, head_dim=4, window_size=4),
}
CASES = [(name, s) for name, cls in SR_NETS.items() for s in cls.supported_scales]


def tiny(name: str, scale: int | None = None) -> torch.nn.Module:
    cls = SR_NETS[name]
    return build_sr_net(name, scale=cls.supported_scales[-1] if scale is None else scale, **TINY[name])


def test_registry_covers_every_config():
    assert set(SR_NETS) == set(TINY)
    assert all((CONF / f"{name}.yaml").is_file() for name in SR_NETS)


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_output_shape_for_every_scale_and_odd_sizes(name, scale):
    net = tiny(name, scale).eval()
    assert net.scale == scale
    with torch.no_grad():
        for h, w in [(11, 9), (3, 2)]:  # odd sizes, and smaller than any window / pad multiple
            out = net(torch.rand(2, 3, h, w))
            assert out.shape == (2, 3, h * scale, w * scale)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(SR_NETS))
def test_unsupported_scale_names_data_scale_and_the_valid_scales(name):
    with pytest.raises(ConfigError) as info:
        build_sr_net(name, scale=5, **TINY[name])
    message = str(info.value)
    assert message.startswith("data.scale:")
    assert str(list(SR_NETS[name].supported_scales)) in message


def test_unknown_net_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        build_sr_net("esrgan", scale=4)
    assert str(info.value).startswith("net:") and "edsr" in str(info.value) and "swinir" in str(info.value)


@pytest.mark.parametrize("name", list(SR_NETS))
def test_gradients_reach_input_and_every_parameter(name):
    torch.manual_seed(0)
    net = tiny(name).train()
    x = torch.rand(2, 3, 10, 12, requires_grad=True)
    net(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("name", list(SR_NETS))
def test_bf16_autocast_and_channels_last(name):
    net = tiny(name).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.shape == (1, 3, 12 * net.scale, 10 * net.scale)
    assert torch.isfinite(out.float()).all()


# Published sizes: (config, scale, million parameters low, high). EDSR baseline is 1.37M at x2
# (1.52M at x4); SwinIR-light is 0.88M/0.90M at x2/x4 without its relative-position tables
# (+0.03M with them, counted here); NAFNet-SIDD-width32 29.2M; SCUNet 17.9M.
PUBLISHED = [
    ("edsr", 2, 1.36, 1.38),
    ("edsr", 4, 1.50, 1.53),
    ("rrdb", 4, 16.6, 16.8),
    ("rdn", 4, 22.0, 22.5),
    ("swinir", 4, 0.89, 0.94),
    ("nafnet", 1, 29.0, 29.3),
    ("scunet", 1, 17.8, 18.1),
    ("espcn", 3, 0.02, 0.04),
    ("fsrcnn", 3, 0.02, 0.03),
    ("srcnn", 3, 0.06, 0.07),
]


@pytest.mark.parametrize(("name", "scale", "low", "high"), PUBLISHED)
def test_configs_build_published_sizes(name, scale, low, high):
    cfg = OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), {"data": {"scale": scale}})
    with torch.device("meta"):  # sizes only: skip allocating and initialising ~20M weights
        net = build_net({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "data"})
    millions = sum(p.numel() for p in net.parameters()) / 1e6
    assert low <= millions <= high, f"{name} x{scale}: {millions:.3f}M"


@pytest.mark.parametrize("name", list(SR_NETS))
def test_config_spells_out_the_constructor_defaults(name):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert cfg.pop("_target_").endswith("." + SR_NETS[name].__name__)
    assert cfg.pop("scale") == "${data.scale}"
    assert cfg.pop("weights") is None  # read by featlab.nets.published.build_net, not the constructor
    params = inspect.signature(SR_NETS[name]).parameters
    for key, value in cfg.items():
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key
    assert set(params) - {"scale"} == set(cfg)


def _reference_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """The Swin recipe: label the 3x3 slice regions of the image, compare labels per window."""
    labels = torch.zeros(1, h, w, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for hs in cuts:
        for ws in cuts:
            labels[:, hs, ws, :] = count
            count += 1
    flat = window_partition(labels, window).squeeze(-1)
    return (flat[:, None, :] != flat[:, :, None]).float() * -100.0


@pytest.mark.parametrize(("h", "w", "window"), [(16, 24, 8), (8, 8, 8), (12, 8, 4)])
def test_shifted_window_mask_matches_region_labelling(h, w, window):
    got = shifted_window_mask(h, w, window, window // 2, torch.device("cpu"))
    assert torch.equal(got, _reference_mask(h, w, window, window // 2))


@pytest.mark.parametrize("shifted", [False, True])
def test_fused_window_attention_matches_the_reference_formulation(shifted):
    """The fused kernel computes the papers' softmax(q k^T * scale + bias + mask) v, gradients included
    (the relative position bias is learned through the attention mask)."""
    torch.manual_seed(0)
    attn = WindowAttention(dim=12, num_heads=3, window=4)
    mask = shifted_window_mask(8, 12, 4, 2, torch.device("cpu")) if shifted else None  # 6 windows
    x = torch.randn(2 * 6, 16, 12, requires_grad=True)
    outs, grads = [], []
    for fused in (True, False):
        use_fused_attention(attn, fused)
        attn.zero_grad()
        x.grad = None
        out = attn(x, mask)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append((x.grad.clone(), attn.bias_table.grad.clone(), attn.qkv.weight.grad.clone()))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for fused_grad, reference_grad in zip(*grads):
        torch.testing.assert_close(fused_grad, reference_grad, atol=1e-4, rtol=1e-4)
    assert grads[0][1].abs().sum() > 0

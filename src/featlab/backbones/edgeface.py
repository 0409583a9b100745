"""EdgeFace (George et al., T-BIOM 2024): the face recogniser the DSR task measures identity with.

EdgeFace is timm's EdgeNeXt with a 512-d classifier head used as the embedding, trained with a
margin loss on aligned 112x112 faces normalised to [-1, 1] (mean = std = 0.5). The "gamma"
variants replace every ``nn.Linear`` (the head's ``fc`` included: the published code skips only a
linear layer whose own attribute name contains "head") by a low-rank pair ``linear2(linear1(x))``
of rank ``max(2, int(gamma * min(in, out)))``. Modules are named like the published
``TimmFRWrapperV2`` (the EdgeNeXt under ``.model``), so the released state dicts
(``model.stem.0.weight`` ... ``model.head.fc.linear2.bias``) load without renaming.

The embedding is *not* L2-normalised by the network: cosine similarity needs an explicit
normalisation, which :func:`featlab.metrics.identification.l2_normalize` provides.

The variants are registered in the shared backbone layer (kind ``edgeface``: layers
``stages.0..3``, ``last``, and ``pool`` = the 512-d embedding), so ``create("edgeface_xxs",
checkpoint=...)`` works like any backbone. EdgeFace weights are on no hub that timm knows, so
``pretrained=true`` without a local ``checkpoint`` is an error saying where to get them.

The published ``edgeface_xxs_q.pt`` / ``edgeface_xs_q.pt`` are the ``state_dict()`` of the float
network after ``torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``.
``create`` reads them dequantised (float, differentiable); :class:`EdgeFaceEmbedder`, what the
identity loss and the recognition test use, can also run them as the published int8 model
(``quantized``: auto | true | false), and runs TorchScript files whole. On the official-code
fixture (tests/fixtures/official/edgeface_xxs_q) the int8 model reproduces the official output
exactly and the dequantised float network's embeddings have cosine 0.99985 with it
(tests/backbones/test_edgeface_quantized.py).
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from featlab.backbones.checkpoints import is_torchscript_file, read_checkpoint, read_raw_state
from featlab.backbones.factory import create
from featlab.backbones.quantized import (
    CPUOnly,
    is_dynamic_quantized,
    quantize_like_published,
    with_packed_versions,
)
from featlab.backbones.registry import register_backbone, register_kind
from featlab.backbones.staged import StagedTaps, Step
from featlab.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDING_DIM = 512
INPUT_SIZE = 112
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
CHECKPOINT_SOURCES = ("https://github.com/otroshi/edgeface (checkpoints/*.pt) or the Hugging Face hub "
                      "(Idiap/EdgeFace-*)")


@dataclass(frozen=True)
class EdgeFaceSpec:
    """Which timm EdgeNeXt a published EdgeFace name is built from, and its low-rank ratio."""

    arch: str
    gamma: float | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)


EDGEFACE_VARIANTS: dict[str, EdgeFaceSpec] = {
    "edgeface_xs_gamma_06": EdgeFaceSpec("edgenext_x_small", 0.6),
    "edgeface_s_gamma_05": EdgeFaceSpec("edgenext_small", 0.5),
    "edgeface_xxs": EdgeFaceSpec("edgenext_xx_small"),
    "edgeface_base": EdgeFaceSpec("edgenext_base"),
    # The networks of the published int8 files, named as the official hubconf names them: xs_q is a
    # *full-rank* EdgeNeXt-XS (no low-rank factorisation, unlike xs_gamma_06); xxs_q is edgeface_xxs.
    "edgeface_xs_q": EdgeFaceSpec("edgenext_x_small"),
    "edgeface_xxs_q": EdgeFaceSpec("edgenext_xx_small"),
    # Same structure at a size that runs in milliseconds on a CPU: unit and pipeline tests only.
    "edgeface_tiny_test": EdgeFaceSpec(
        "edgenext_xx_small", 0.5, {"depths": (1, 1, 1, 1), "dims": (16, 24, 32, 48), "heads": (2, 2, 2, 2)}
    ),
}


def low_rank(in_features: int, out_features: int, gamma: float) -> int:
    """EdgeFace's rank rule; the floor of 2 keeps tiny layers from collapsing to rank 1."""
    return max(2, int(min(in_features, out_features) * gamma))


class LowRankLinear(nn.Module):
    """``W x + b`` with ``W`` factored as ``W2 @ W1`` (EdgeFace's LoRaLin; same attribute names)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.linear1 = nn.Linear(in_features, rank, bias=False)
        self.linear2 = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


def make_low_rank(module: nn.Module, gamma: float) -> nn.Module:
    """Swap linear layers for :class:`LowRankLinear` in place, following the published rule exactly.

    A linear child is kept only when its attribute name contains "head"; containers named
    ``head`` are still descended into, which is why ``head.fc`` ends up low-rank too.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and "head" not in name:
            rank = low_rank(child.in_features, child.out_features, gamma)
            setattr(module, name, LowRankLinear(child.in_features, child.out_features, rank, child.bias is not None))
        else:
            make_low_rank(child, gamma)
    return module


class EdgeFaceNet(nn.Module):
    """An EdgeFace network: ``(B, 3, 112, 112)`` normalised to [-1, 1] -> ``(B, 512)`` raw embedding."""

    def __init__(self, name: str, **timm_kwargs: Any) -> None:
        super().__init__()
        if name not in EDGEFACE_VARIANTS:
            raise ConfigError("backbone", f"unknown EdgeFace variant '{name}'. Valid: {', '.join(EDGEFACE_VARIANTS)}")
        spec = EDGEFACE_VARIANTS[name]
        self.name = name
        self.model = timm.create_model(spec.arch, pretrained=False, num_classes=EMBEDDING_DIM,
                                       **{**spec.arch_kwargs, **timm_kwargs})
        if spec.gamma is not None:
            make_low_rank(self.model, spec.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# -- the shared backbone layer ----------------------------------------------------------------------
def edgeface_taps(model: nn.Module) -> StagedTaps:
    """EdgeNeXt's stages like ConvNeXt's (``stages.0..3``, ``last`` = head LayerNorm per position),
    but ``pool`` runs the whole head (mean -> LayerNorm -> ``fc``): the 512-d EdgeFace embedding."""
    steps = [Step(None, ("stem",))]
    steps += [Step(f"stages.{i}", (f"stages.{i}",)) for i in range(len(model.stages))]
    steps.append(Step("last", ("norm_pre", "head.norm")))
    return StagedTaps("cnn", steps, {}, f"stages.{len(model.stages) - 1}", "head", EMBEDDING_DIM)


def build_edgenext(variant: str, num_classes: int = 0, **timm_kwargs: Any) -> nn.Module:
    """The EdgeNeXt inside EdgeFace ``variant`` (``num_classes`` is ignored: the head is always 512-d)."""
    return EdgeFaceNet(variant, **timm_kwargs).model


class CheckpointRequired:
    """``weights_file`` for EdgeFace: there is no hub download, so ``pretrained=true`` needs a local file."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, config_key: str) -> str:
        raise missing_checkpoint_error(f"{config_key}.checkpoint", self.name, None)


def missing_checkpoint_error(key: str, name: str, path: str | Path | None) -> ConfigError:
    where = f"no file at '{path}'" if path else "no checkpoint given"
    return ConfigError(
        key,
        f"EdgeFace '{name}' needs its published weights ({where}): download {name}.pt from "
        f"{CHECKPOINT_SOURCES} and set {key}=/path/to/{name}.pt; pretrained=false runs with a "
        "randomly initialised EdgeFace for pipeline checks only",
    )


register_kind("edgeface", edgeface_taps)
for _name, _spec in EDGEFACE_VARIANTS.items():
    _test = _name.endswith("_test")
    register_backbone(
        _name, "edgeface", partial(build_edgenext, _name), input_size=INPUT_SIZE, mean=MEAN, std=STD,
        weights_file=None if _test else CheckpointRequired(_name), test_only=_test,
        description=f"EdgeFace on timm {_spec.arch}" + (f", low-rank gamma={_spec.gamma}" if _spec.gamma else "")
        + (f" (the network of the published int8 {_name}.pt, read dequantised)" if _name.endswith("_q") else "")
        + "; pool = 512-d embedding (not L2-normalised); weights from a local checkpoint only",
    )


# -- TorchScript and int8 files ---------------------------------------------------------------------
def is_quantized_torchscript(path: str | Path) -> bool:
    """Whether a TorchScript archive's code calls quantised ops (int8 linears run on the CPU only)."""
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name and name.endswith(".py") and b"quantized" in archive.read(name)
                   for name in archive.namelist())


def quantized_option(value: Any, key: str) -> bool | None:
    """``quantized``: ``auto`` -> None (follow the file), true/false as booleans; anything else is an error."""
    text = str(value).strip().lower()
    if value is None or text == "auto":
        return None
    if isinstance(value, bool) or text in ("true", "false"):
        return value if isinstance(value, bool) else text == "true"
    raise ConfigError(key, f"'{value}' is not one of auto, true, false")


def file_is_quantized(path: Path, key: str) -> bool:
    """A TorchScript archive calling quantised ops, or a state dict with packed int8 linears."""
    if is_torchscript_file(path):
        return is_quantized_torchscript(path)
    return is_dynamic_quantized(read_raw_state(path, key))


def load_torchscript(path: Path, quantized: bool | None, key: str) -> nn.Module:
    """A TorchScript EdgeFace (normalised 112 px in, 512-d out), run whole.

    ``torch.load(weights_only=True)`` cannot open TorchScript, so ``torch.jit.load`` reads it: its
    unpickler resolves TorchScript types only and never imports Python objects, but the archive's
    TorchScript code does run (``__setstate__``, ``forward``), so such a file must come from a source
    the user trusts; the state-dict files are the safer choice. A quantised
    one stays on the CPU (:class:`CPUOnly`) and has no gradients; TorchScript can be neither
    dequantised nor quantised here, so the choice the file made is the only one.
    """
    int8 = is_quantized_torchscript(path)
    if quantized is False and int8:
        raise ConfigError(f"{key}.checkpoint",
                          f"'{path}' is a quantised TorchScript EdgeFace, which cannot be dequantised: it has no "
                          "float weights and no gradients (the identity loss and quantized=false need both); use "
                          "the state-dict file (the official edgeface_*_q.pt is one) or a float checkpoint")
    if quantized is True and not int8:
        raise ConfigError(f"{key}.quantized",
                          f"'{path}' is a float TorchScript file, which cannot be quantised here; give its state "
                          "dict, or set quantized=auto to run it as it is")
    scripted = torch.jit.load(str(path), map_location="cpu").eval()
    return CPUOnly(scripted) if int8 else scripted


def quantized_edgeface(extractor: nn.Module, checkpoint: Path | None, key: str) -> CPUOnly:
    """The published int8 EdgeFace: the float network (already checked and loaded by ``create``) is
    quantised the way the ``*_q.pt`` files were made, then, for such a file, the file's own int8
    weights replace the re-quantised ones (re-quantising dequantised weights would not give back the
    same scales)."""
    net = quantize_like_published(extractor.model)
    if checkpoint is not None:
        raw = read_raw_state(checkpoint, f"{key}.checkpoint")
        if is_dynamic_quantized(raw):
            try:
                net.load_state_dict(with_packed_versions(raw), strict=True)
            except (RuntimeError, KeyError) as err:
                first = (str(err).splitlines() or [""])[0][:200]
                raise ConfigError(f"{key}.checkpoint", f"'{checkpoint}' does not load into the int8 "
                                                       f"{extractor.name}: {first}") from None
    return CPUOnly(net)


# -- what the identity loss and the recognition evaluation use ---------------------------------------
_WARNED_RANDOM: set[str] = set()


class EdgeFaceEmbedder(nn.Module):
    """Frozen EdgeFace: RGB in [0, 1] of any size -> raw ``(B, 512)`` embeddings (normalise before cosine).

    ``quantized`` chooses what runs: ``auto`` follows the file (an int8 file runs as the published
    int8 model, a float one as float), ``false`` always runs float weights (an int8 state dict is
    dequantised: what the identity loss needs, for gradients), ``true`` always int8 (a float
    file is quantised like the published ``*_q.pt``). Float weights go through the shared
    :func:`featlab.backbones.create` (:attr:`extractor`, differentiable); int8 or TorchScript
    networks run whole (:attr:`runner`; int8 on the CPU, without gradients). Either way resizing to
    112 px and the [-1, 1] normalisation happen here, and gradients reach the input only.
    """

    def __init__(self, name: str = "edgeface_xs_gamma_06", checkpoint: str | None = None,
                 pretrained: bool = True, config_key: str = "backbone", name_key: str | None = None,
                 quantized: bool | str | None = "auto") -> None:
        super().__init__()
        name_key = name_key or f"{config_key}.name"
        if name not in EDGEFACE_VARIANTS:
            raise ConfigError(name_key,
                              f"unknown EdgeFace variant '{name}'. Valid: {', '.join(EDGEFACE_VARIANTS)}")
        mode = quantized_option(quantized, f"{config_key}.quantized")
        self.name = name
        self.extractor: nn.Module | None = None  # float weights, differentiable
        self.runner: nn.Module | None = None  # a whole network on normalised 112 px: TorchScript or int8
        path = Path(checkpoint).expanduser() if checkpoint else None
        if path is not None and not path.is_file():
            raise missing_checkpoint_error(f"{config_key}.checkpoint", name, checkpoint)
        if path is not None and is_torchscript_file(path):
            self.runner = load_torchscript(path, mode, config_key)
        else:
            int8_file = path is not None and file_is_quantized(path, f"{config_key}.checkpoint")
            extractor = _create_with_hint(name, checkpoint, pretrained, config_key, name_key)
            if mode is True or (mode is None and int8_file):
                self.runner = quantized_edgeface(extractor, path if int8_file else None, config_key)
            else:
                self.extractor = extractor
                if int8_file:
                    log.info("EdgeFace '%s': int8 weights of %s dequantised to float (embeddings differ slightly "
                             "from the int8 model's; see tests/backbones/test_edgeface_quantized.py)", name, path)
            if checkpoint is None and not pretrained and name not in _WARNED_RANDOM:
                _WARNED_RANDOM.add(name)  # once per process, not once per copy
                log.warning("EdgeFace '%s' is randomly initialised (pretrained=false): identity numbers are "
                            "pipeline checks, not recognition results", name)
        self.spec = (name, checkpoint, bool(pretrained), self.quantized)  # equal specs may share one instance
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    @property
    def quantized(self) -> bool:
        """Whether an int8 network runs (CPU only, no gradients)."""
        return isinstance(self.runner, CPUOnly)

    def train(self, mode: bool = True) -> EdgeFaceEmbedder:
        """Always eval mode: the recogniser is a fixed measuring instrument."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extractor is not None:
            return self.extractor.global_features(x)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        return self.runner((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def _create_with_hint(name: str, checkpoint: str | None, pretrained: bool, config_key: str,
                      name_key: str) -> nn.Module:
    """``create(name, layers=[pool])``; a checkpoint of another variant gets told which one it is."""
    try:
        return create(name, layers=["pool"], pretrained=pretrained, checkpoint=checkpoint, config_key=config_key,
                      name_key=name_key)
    except ConfigError as err:
        guess = matching_variant(checkpoint) if checkpoint else None
        if guess is None or guess == name:
            raise
        raise ConfigError(None, f"{err}; the file matches '{guess}': set {name_key}={guess}") from None


def matching_variant(checkpoint: str | Path) -> str | None:
    """The variant whose keys and shapes equal the checkpoint's (error path only: builds each variant)."""
    try:
        state = read_checkpoint(checkpoint)[0]
    except ConfigError:
        return None
    for variant in EDGEFACE_VARIANTS:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            expected = build_edgenext(variant).state_dict()
        if set(state) == set(expected) and all(state[k].shape == v.shape for k, v in expected.items()):
            return variant
    return None

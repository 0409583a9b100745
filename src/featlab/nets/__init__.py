"""Trainable networks.

Each family lives in its own module or sub-package (``featlab.nets.sr`` for super-resolution and
restoration); this file imports none of them, so building one network never pays for the others.
:func:`load` turns a published weight file (Real-ESRGAN, SwinIR, EDSR, NAFNet, SCUNet, ...) or a
featlab checkpoint into the network it holds (see :mod:`featlab.nets.published`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


def load(path: str | Path, name: str | None = None, **overrides: Any) -> nn.Module:
    """The network in a published SR/restoration weight file or a featlab checkpoint: eval mode,
    fp32, CPU, RGB in [0, 1] in, output not clamped. ``name`` picks/asserts the architecture."""
    from featlab.nets.published import load as load_published

    return load_published(path, name, **overrides)


__all__ = ["load"]

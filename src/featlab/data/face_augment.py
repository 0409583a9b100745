"""Identity-safe augmentation for aligned faces, as batched tensor ops (CPU or GPU alike).

Face recognisers are trained on aligned crops, so anything that moves the eyes far from their
canonical place, or changes skin tone a lot, changes what the recogniser sees as *identity*.
Only mild, label-preserving changes are used: a mirror (faces are near-symmetric), a small roll
(within +-5 degrees on 60% of the images) and small brightness / contrast / saturation jitter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from featlab.errors import require

LUMA = (0.299, 0.587, 0.114)


def _rand(batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(batch, device=device, generator=generator)


def random_hflip(images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = (_rand(images.shape[0], images.device, generator) < p).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(-1), images)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre; reflected borders avoid black corners the SR net would learn."""
    angles = degrees.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], -1), torch.stack([sin, cos, zeros], -1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_rotate(images: torch.Tensor, p: float, max_degrees: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    batch, device = images.shape[0], images.device
    apply = _rand(batch, device, generator) < p
    degrees = (2 * _rand(batch, device, generator) - 1) * max_degrees * apply
    if not bool(apply.any()):
        return images
    return rotate(images, degrees)


def luma(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def color_jitter(images: torch.Tensor, brightness: float, contrast: float, saturation: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image factors drawn from ``[1 - s, 1 + s]`` for each strength ``s`` (0 switches one off)."""
    batch, device = images.shape[0], images.device

    def factor(strength: float) -> torch.Tensor:
        return (1 + strength * (2 * _rand(batch, device, generator) - 1)).view(-1, 1, 1, 1).to(images.dtype)

    out = images * factor(brightness)
    mean = luma(out).mean(dim=(2, 3), keepdim=True)
    out = mean + (out - mean) * factor(contrast)
    grey = luma(out)
    out = grey + (out - grey) * factor(saturation)
    return out.clamp(0.0, 1.0)


class FaceAugment:
    """The DSR training augmentation; each strength is a config key under ``data.augment``."""

    def __init__(self, hflip_p: float = 0.5, rotate_p: float = 0.6, max_degrees: float = 5.0,
                 brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.1) -> None:
        for key, value in (("hflip_p", hflip_p), ("rotate_p", rotate_p)):
            require(0.0 <= value <= 1.0, f"data.augment.{key}", f"is a probability, got {value}")
        for key, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            require(0.0 <= value < 1.0, f"data.augment.{key}", f"must be in [0, 1), got {value}")
        require(0.0 <= max_degrees <= 30.0, "data.augment.max_degrees",
                f"must be in [0, 30] (identity-safe rotations are small), got {max_degrees}")
        self.hflip_p, self.rotate_p, self.max_degrees = hflip_p, rotate_p, max_degrees
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        images = random_hflip(images, self.hflip_p, generator)
        if self.max_degrees > 0:
            images = random_rotate(images, self.rotate_p, self.max_degrees, generator)
        return color_jitter(images, self.brightness, self.contrast, self.saturation, generator)

    def __repr__(self) -> str:
        return (f"FaceAugment(hflip_p={self.hflip_p}, rotate_p={self.rotate_p}, max_degrees={self.max_degrees}, "
                f"brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation})")

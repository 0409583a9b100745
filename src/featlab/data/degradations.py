"""HR -> LR degradations as batched tensor ops, so they run in loader workers or on the GPU alike.

The order is the classical first-order model (blur -> bicubic downsample -> noise -> JPEG) used by
the SR literature: blur and resize act on the scene, noise and compression on the captured file.
Random parameters are drawn per image, from the caller's ``torch.Generator`` when one is given
(deterministic validation) and from the global RNG otherwise (training, where Lightning seeds
every loader worker differently).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kornia
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from featlab.config import to_plain
from featlab.data.base import BaseDataModule
from featlab.data.resize import imresize
from featlab.errors import ConfigError, require, unknown_name

Range = tuple[float, float]
DEGRADATION_KEYS = ("blur_sigma", "noise_sigma", "jpeg_quality")


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB ``imresize(hr, 1/scale)`` (antialiased bicubic), clamped to [0, 1] like a saved image.

    This is how SR benchmark LR images are made. PyTorch's antialiased bicubic equals it inside
    the image but renormalises a truncated kernel at the borders where MATLAB mirrors the image;
    :func:`featlab.data.resize.imresize` matches MATLAB everywhere.
    """
    if scale == 1:
        return hr
    h, w = hr.shape[-2:]
    require(h % scale == 0 and w % scale == 0, "data.scale",
            f"HR size {h}x{w} is not divisible by scale {scale}")
    return imresize(hr, size=(h // scale, w // scale)).clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Isotropic Gaussian blur with one sigma per image (reflect border, kernel of +-3 sigma)."""
    batch = images.shape[0]
    sigmas = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).reshape(-1).expand(batch)
    # A zero sigma would divide by zero; a tiny one gives the identity kernel.
    sigmas = sigmas.clamp_min(1e-4)
    radius = max(1, int(torch.ceil(3.0 * sigmas.max()).item()))
    return kornia.filters.gaussian_blur2d(images, (2 * radius + 1,) * 2, sigmas[:, None].expand(batch, 2))


def gaussian_noise(images: torch.Tensor, sigma: torch.Tensor | float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive colour noise; ``sigma`` is in 8-bit levels (x/255), one value per image."""
    sigmas = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1) / 255.0
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + sigmas * noise).clamp(0.0, 1.0)


def jpeg_compress(images: torch.Tensor, quality: torch.Tensor | int) -> torch.Tensor:
    """Real JPEG round trip (libjpeg on CPU, nvjpeg on CUDA) with one quality per image.

    A true codec rather than a differentiable approximation: the LR side needs no gradient, and
    the artefacts should be the ones users' images actually carry.
    """
    qualities = torch.as_tensor(quality).reshape(-1).expand(images.shape[0]).tolist()
    as_bytes = images.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    decoded = []
    for image, q in zip(as_bytes, qualities):
        data = encode_jpeg(image.contiguous(), quality=int(q))
        decoded.append(decode_jpeg(data.cpu(), device=images.device))
    return torch.stack(decoded).to(images.dtype) / 255.0


def parse_range(value: float | Sequence[float] | None, key: str, low: float, high: float) -> Range | None:
    """``None`` | number | ``[lo, hi]`` -> ``(lo, hi)`` within ``[low, high]``, or a ConfigError naming key."""
    if value is None:
        return None
    values = [value, value] if isinstance(value, (int, float)) else list(value)
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
        raise ConfigError(key, f"expected null, a number or [lo, hi], got {value!r}")
    lo, hi = float(values[0]), float(values[1])
    require(low <= lo <= hi <= high, key, f"range [{lo}, {hi}] must satisfy {low} <= lo <= hi <= {high}")
    return lo, hi


def degradation_options(value: Any, key: str = "data.degradation") -> dict[str, Any]:
    """``data.degradation`` (null or a mapping of :data:`DEGRADATION_KEYS`) as a dict; other keys are errors."""
    value = to_plain(value)
    require(value is None or isinstance(value, Mapping), key,
            f"expected a mapping of {', '.join(DEGRADATION_KEYS)}, got {value!r}")
    options = dict(value or {})
    for name in options:
        if name not in DEGRADATION_KEYS:
            raise unknown_name(key, name, DEGRADATION_KEYS, "degradation")
    return options


def _uniform(bounds: Range, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(batch, generator=generator, device=device)


class Degradation:
    """HR ``(B, 3, H, W)`` in [0, 1] -> LR ``(B, 3, H/scale, W/scale)``; scale 1 = restoration only.

    Each of blur (sigma in pixels), noise (sigma in 8-bit levels) and JPEG (quality 1-100) is off
    when ``None``, fixed for a number and drawn uniformly per image for ``[lo, hi]``. With ``seed``
    set, calls without an explicit generator draw from a private generator seeded once with it,
    so a fixed sequence of calls repeats exactly; with ``seed=None`` they use the global RNG.
    """

    def __init__(
        self,
        scale: int,
        blur_sigma: float | Sequence[float] | None = None,
        noise_sigma: float | Sequence[float] | None = None,
        jpeg_quality: float | Sequence[float] | None = None,
        seed: int | None = None,
        key: str = "data.degradation",
    ) -> None:
        require(isinstance(scale, int) and scale >= 1, "data.scale", f"must be an integer >= 1, got {scale}")
        self.scale = int(scale)
        self.blur_sigma = parse_range(blur_sigma, f"{key}.blur_sigma", 0.0, 50.0)
        self.noise_sigma = parse_range(noise_sigma, f"{key}.noise_sigma", 0.0, 255.0)
        self.jpeg_quality = parse_range(jpeg_quality, f"{key}.jpeg_quality", 1.0, 100.0)
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    @classmethod
    def from_config(cls, scale: int, options: Any, seed: int | None = None,
                    key: str = "data.degradation") -> Degradation:
        """From the ``data.degradation`` mapping, validated by :func:`degradation_options`."""
        return cls(scale, seed=seed, key=key, **degradation_options(options, key))

    @property
    def is_bicubic_only(self) -> bool:
        """True when LR is exactly ``bicubic_downsample(HR)`` (the classical SR benchmark setting)."""
        return self.blur_sigma is None and self.noise_sigma is None and self.jpeg_quality is None

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if hr.ndim != 4 or hr.shape[1] != 3:
            raise ValueError(f"Degradation expects (B, 3, H, W) images, got {tuple(hr.shape)}")
        generator = generator if generator is not None else self._generator(hr.device)
        batch, device = hr.shape[0], hr.device
        image = hr
        if self.blur_sigma is not None:
            image = gaussian_blur(image, _uniform(self.blur_sigma, batch, device, generator))
        image = bicubic_downsample(image, self.scale)
        if self.noise_sigma is not None:
            image = gaussian_noise(image, _uniform(self.noise_sigma, batch, device, generator), generator)
        if self.jpeg_quality is not None:
            lo, hi = round(self.jpeg_quality[0]), round(self.jpeg_quality[1])
            quality = torch.randint(lo, hi + 1, (batch,), generator=generator, device=device)
            image = jpeg_compress(image, quality)
        return image

    def __repr__(self) -> str:
        return (f"Degradation(scale={self.scale}, blur_sigma={self.blur_sigma}, "
                f"noise_sigma={self.noise_sigma}, jpeg_quality={self.jpeg_quality}, seed={self.seed})")


class DegradingDataModule(BaseDataModule):
    """A DataModule of HR images whose LR its ``degradation`` makes, in workers or on the device.

    Subclasses set ``self.degradation``. Batches that arrive with HR only (training batches when
    the degradation runs on the device) get ``augment_on_device(hr)`` and their LR here, after the
    transfer, so tasks always see ``{"lr", "hr", ...}``; evaluation batches carry a fixed LR and
    pass through untouched.
    """

    degradation: Degradation

    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """HR ``(B, 3, H, W)`` on any device -> LR, with this module's degradation settings."""
        return self.degradation(hr, generator=generator)

    def augment_on_device(self, hr: torch.Tensor) -> torch.Tensor:
        """Tensor augmentations of HR-only batches before they are degraded (none by default)."""
        return hr

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "hr" in batch and "lr" not in batch:
            hr = self.augment_on_device(batch["hr"])
            batch = {**batch, "hr": hr, "lr": self.degrade(hr)}
        return batch

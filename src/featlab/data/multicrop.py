"""DINO multi-crop augmentation as batched tensor ops, usable per image (CPU workers) or per batch (GPU).

One implementation serves both paths: a DataLoader worker calls it on one image (batch of 1), the
task calls it on a whole uint8 batch already on the accelerator, so the CPU never bottlenecks a
GPU run and both paths draw from the same distribution. Random resized crops are
``torchvision.ops.roi_align`` boxes (adaptive sampling averages several points per output pixel,
which anti-aliases large crops the way PIL's resize does); colour ops are per-sample blends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from kornia.enhance import adjust_hue
from kornia.filters import gaussian_blur2d
from torchvision.ops import roi_align

from featlab.errors import require

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _check_size(value: object, key: str) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    require(ok, key, f"must be a positive integer (pixels), got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _check_range(value: Sequence[float], key: str, low: float, high: float) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    require(len(pair) == 2 and low < pair[0] <= pair[1] <= high, key,
            f"must be [min, max] with {low} < min <= max <= {high}, got {list(value)}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view: its output size, crop-area range, and per-view blur/solarise probabilities."""

    size: int
    scale: tuple[float, float]
    count: int
    blur_p: tuple[float, ...]
    solarize_p: tuple[float, ...]


class MultiCrop:
    """DINO's views: 2 global crops (blur on the 1st, rare blur + solarisation on the 2nd) and N local crops.

    ``__call__(images)`` takes ``(B, 3, H, W)`` uint8 or [0, 1] float images and returns
    ``2 + N`` float tensors in [0, 1]: the global crops first (``(B, 3, G, G)`` each), then the
    local ones (``(B, 3, L, L)``), the order the student, teacher and loss expect.
    """

    def __init__(
        self,
        global_crops_size: int = 224,
        global_crops_scale: Sequence[float] = (0.4, 1.0),
        local_crops_number: int = 8,
        local_crops_size: int = 96,
        local_crops_scale: Sequence[float] = (0.05, 0.4),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        color_jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel_size: int = 13,
        solarize_threshold: float = 0.5,
    ) -> None:
        key = "data.multicrop"
        n_local = local_crops_number
        require(isinstance(n_local, int) and not isinstance(n_local, bool) and n_local >= 0,
                f"{key}.local_crops_number", f"must be an integer >= 0, got {n_local!r}")
        global_size = _check_size(global_crops_size, f"{key}.global_crops_size")
        local_size = _check_size(local_crops_size, f"{key}.local_crops_size")
        require(local_size <= global_size, f"{key}.local_crops_size",
                f"local crops ({local_size}px) must not be larger than global crops ({global_size}px)")
        self.global_view = ViewSpec(global_size, _check_range(global_crops_scale, f"{key}.global_crops_scale", 0, 1),
                                    2, blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2))
        self.local_view = ViewSpec(local_size, _check_range(local_crops_scale, f"{key}.local_crops_scale", 0, 1),
                                   n_local, blur_p=(0.5,) * n_local, solarize_p=(0.0,) * n_local)
        self.log_ratio = tuple(math.log(r) for r in _check_range(ratio, f"{key}.ratio", 0, math.inf))
        self.flip_p = flip_p
        require(len(color_jitter) == 4, f"{key}.color_jitter", "needs [brightness, contrast, saturation, hue]")
        self.color_jitter = tuple(float(v) for v in color_jitter)
        self.color_jitter_p = color_jitter_p
        self.grayscale_p = grayscale_p
        self.blur_sigma = _check_range(blur_sigma, f"{key}.blur_sigma", 0, math.inf)
        self.blur_kernel_size = blur_kernel_size
        self.solarize_threshold = solarize_threshold

    @property
    def ncrops(self) -> int:
        return self.global_view.count + self.local_view.count

    @property
    def crop_sizes(self) -> list[int]:
        return [self.global_view.size] * self.global_view.count + [self.local_view.size] * self.local_view.count

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        require(images.ndim == 4 and images.shape[1] == 3, "data", f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        crops: list[torch.Tensor] = []
        for view in (self.global_view, self.local_view):
            if view.count:
                crops.extend(self.views(x, view).split(x.shape[0]))
        return crops

    # -- one kind of view, all images and all repeats in one batch --------------------------------
    def views(self, x: torch.Tensor, view: ViewSpec) -> torch.Tensor:
        """``view.count`` crops of every image as one ``(count * B, 3, s, s)`` batch, view-major."""
        batch, _, height, width = x.shape
        rows = batch * view.count
        boxes = sample_crop_boxes(rows, height, width, view.scale, self.log_ratio, x.device)
        image_index = torch.arange(batch, device=x.device, dtype=x.dtype).repeat(view.count)
        out = roi_align(x, torch.cat([image_index[:, None], boxes.to(x.dtype)], 1), output_size=view.size,
                        spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        out = self.flip(out)
        out = self.jitter(out)
        out = self.grayscale(out)
        out = self.blur(out, _per_row(view.blur_p, batch, x.device))
        out = self.solarize(out, _per_row(view.solarize_p, batch, x.device))
        return out.clamp_(0.0, 1.0)

    def flip(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(x.shape[0], device=x.device) < self.flip_p
        return torch.where(mask[:, None, None, None], x.flip(-1), x)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness/contrast/saturation/hue in a random order (one order per call) with prob ``p``.

        Per-sample factors; samples that skip the jitter get identity factors so the whole batch
        runs the same ops. The order is drawn per call: per image on the CPU path (as torchvision
        does), per batch on the GPU path.
        """
        rows, device = x.shape[0], x.device
        applied = (torch.rand(rows, device=device) < self.color_jitter_p).float()
        b, c, s, h = self.color_jitter

        def factor(strength: float, lo: float = 0.0) -> torch.Tensor:
            f = 1.0 + (torch.rand(rows, device=device) * 2 - 1) * strength
            return (1.0 + applied * (f.clamp_min(lo) - 1.0))[:, None, None, None]

        brightness, contrast, saturation = factor(b), factor(c), factor(s)
        hue = applied * (torch.rand(rows, device=device) * 2 - 1) * h
        ops = {
            0: lambda t: t * brightness,
            1: lambda t: _blend(t, gray(t).mean((1, 2, 3), keepdim=True), contrast),
            2: lambda t: _blend(t, gray(t), saturation),
            3: lambda t: adjust_hue(t, hue * 2 * math.pi) if h > 0 else t,
        }
        for op in torch.randperm(4).tolist():
            x = ops[op](x).clamp(0.0, 1.0)
        return x

    def grayscale(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(x.shape[0], device=x.device) < self.grayscale_p
        return torch.where(mask[:, None, None, None], gray(x).expand_as(x), x)

    def blur(self, x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """Gaussian blur with a per-sample sigma on the rows that draw it.

        Every row is blurred and the picked ones selected: a separable blur costs little next to
        the backbone, while picking rows by index would stall the GPU stream on a host sync.
        """
        mask = torch.rand(x.shape[0], device=x.device) < prob
        lo, hi = self.blur_sigma
        sigma = lo + (hi - lo) * torch.rand(x.shape[0], 1, device=x.device, dtype=x.dtype)
        kernel = min(self.blur_kernel_size, 2 * (min(x.shape[-2:]) // 2) - 1)
        blurred = gaussian_blur2d(x, kernel, sigma.expand(-1, 2).contiguous(), border_type="reflect")
        return torch.where(mask[:, None, None, None], blurred, x)

    def solarize(self, x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(x.shape[0], device=x.device) < prob
        solar = torch.where(x >= self.solarize_threshold, 1.0 - x, x)
        return torch.where(mask[:, None, None, None], solar, x)


def gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, (N, 1, H, W): the grey torchvision's grayscale and saturation ops use."""
    r, g, b = GRAY_WEIGHTS
    return (r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3])


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return factor * x + (1.0 - factor) * other


def _per_row(probs: Sequence[float], batch: int, device: torch.device) -> torch.Tensor:
    """Per-view probabilities expanded to the view-major rows of a crop batch."""
    # filled on the device: no host-to-device copy per step
    return torch.cat([torch.full((batch,), float(p), device=device) for p in probs])


def sample_crop_boxes(
    rows: int, height: int, width: int, scale: Sequence[float], log_ratio: Sequence[float],
    device: torch.device | str = "cpu", attempts: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop boxes ``(rows, 4)`` as ``x1, y1, x2, y2`` in pixel coordinates.

    Same rule as torchvision: up to ``attempts`` draws of (area fraction, log aspect ratio) per row,
    the first that fits wins; rows where none fits fall back to the largest centred box whose
    aspect ratio lies in range. All rows are drawn at once so the GPU path has no Python loop.
    """
    area = height * width
    frac = torch.empty(rows, attempts, device=device).uniform_(scale[0], scale[1])
    aspect = torch.exp(torch.empty(rows, attempts, device=device).uniform_(log_ratio[0], log_ratio[1]))
    w = torch.sqrt(area * frac * aspect)
    h = torch.sqrt(area * frac / aspect)
    fits = (w <= width) & (h <= height)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)           # index of the first fitting draw
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    any_fit = fits.any(1)
    fb_w, fb_h = _fallback_box(height, width, log_ratio)
    w = torch.where(any_fit, w, torch.full_like(w, fb_w))
    h = torch.where(any_fit, h, torch.full_like(h, fb_h))
    x1 = torch.where(any_fit, torch.rand(rows, device=device) * (width - w), (width - w) / 2)
    y1 = torch.where(any_fit, torch.rand(rows, device=device) * (height - h), (height - h) / 2)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def _fallback_box(height: int, width: int, log_ratio: Sequence[float]) -> tuple[float, float]:
    lo, hi = math.exp(log_ratio[0]), math.exp(log_ratio[1])
    in_ratio = width / height
    if in_ratio < lo:
        return float(width), width / lo
    if in_ratio > hi:
        return height * hi, float(height)
    return float(width), float(height)


def to_float_crops(crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """uint8 crops from CPU workers (4x less to transfer) back to [0, 1] floats on their device."""
    return [c.float().div_(255.0) if c.dtype == torch.uint8 else c for c in crops]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)

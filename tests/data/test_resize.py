"""MATLAB ``imresize`` semantics, checked two independent ways.

1. Against MATLAB itself: ``fixtures/matlab_imresize_baboon.npz`` holds the top-left 32x32 of
   Set14's baboon and the top-left corners of MATLAB R2020 ``imresize(im2double(img), s,
   'bicubic')`` written as 8-bit PNGs (published by xinntao/matlab_functions_verification). The
   corners kept depend only on the stored crop (their kernel support, mirrored at the top/left
   edges, lies inside it), so resizing the crop must reproduce them.
2. Against a per-pixel loop written here from the formula in MATLAB's documentation (no matrices,
   no shared code with the implementation).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featlab.data.degradations import bicubic_downsample
from featlab.data.resize import bicubic_upscale, imresize

FIXTURE = Path(__file__).parent / "fixtures" / "matlab_imresize_baboon.npz"


def keys_cubic(t: float) -> float:
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def reference_axis(signal: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """One axis, pixel by pixel: mirrored borders, kernel stretched by 1/scale when shrinking."""
    n = len(signal)
    stretch = min(scale, 1.0)
    out = np.zeros(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        total, weight_sum = 0.0, 0.0
        for j in range(math.floor(u - 2 / stretch) - 1, math.ceil(u + 2 / stretch) + 2):
            w = stretch * keys_cubic(stretch * (u - j))
            if w == 0.0:
                continue
            k = j
            while k < 1 or k > n:  # mirror: ... 2 1 | 1 2 ... n | n n-1 ...
                k = 1 - k if k < 1 else 2 * n + 1 - k
            total += w * signal[k - 1]
            weight_sum += w
        out[x - 1] = total / weight_sum
    return out


def reference_resize(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    rows = np.stack([reference_axis(image[:, c], out_h, scale) for c in range(w)], axis=1)
    return np.stack([reference_axis(rows[r], out_w, scale) for r in range(out_h)], axis=0)


@pytest.mark.parametrize("scale", [4, 3, 2, 1 / 2, 1 / 3, 1 / 4, 0.6])
def test_imresize_matches_a_per_pixel_reference(scale):
    rng = np.random.default_rng(0)
    image = rng.random((9, 13))
    expected = reference_resize(image, scale)
    got = imresize(torch.from_numpy(image)[None, None], scale=scale)[0, 0].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("key,scale", [("down_x4", 1 / 4), ("down_x3", 1 / 3), ("up_x2", 2), ("up_x3", 3)])
def test_imresize_reproduces_matlab_output(key, scale):
    data = np.load(FIXTURE)
    image = torch.from_numpy(data["input"]).permute(2, 0, 1).double() / 255
    matlab = torch.from_numpy(data[key]).permute(2, 0, 1).double()
    h, w = matlab.shape[-2:]
    ours = (imresize(image, scale=scale).clamp(0, 1) * 255).round()[:, :h, :w]
    diff = (ours - matlab).abs()
    assert diff.max() <= 1  # MATLAB writes uint8 PNGs: a rounding tie may land one level off
    assert (diff > 0).float().mean() < 0.002


def test_pytorch_bicubic_is_not_matlab():
    """The reason this module exists: F.interpolate (a = -0.75, replicated border) differs."""
    data = np.load(FIXTURE)
    image = torch.from_numpy(data["input"]).permute(2, 0, 1).double()[None] / 255
    matlab = torch.from_numpy(data["up_x2"]).permute(2, 0, 1).double()
    torch_up = (F.interpolate(image, scale_factor=2, mode="bicubic", align_corners=False)[0].clamp(0, 1) * 255).round()
    assert (torch_up[:, :48, :48] - matlab).abs().max() >= 5


def test_downsampling_equals_pytorch_antialias_inside_and_mirrors_at_borders():
    hr = torch.rand(2, 3, 32, 40, dtype=torch.float64)
    ours = imresize(hr, scale=1 / 4)
    pytorch = F.interpolate(hr, size=(8, 10), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(ours[..., 2:-2, 2:-2], pytorch[..., 2:-2, 2:-2])
    assert not torch.allclose(ours, pytorch)


def test_constant_images_stay_constant_and_sizes_follow_matlab():
    image = torch.full((1, 3, 10, 7), 0.3)
    for scale in (1 / 3, 2.5, 4):
        out = imresize(image, scale=scale)
        assert out.shape[-2:] == (math.ceil(10 * scale), math.ceil(7 * scale))
        torch.testing.assert_close(out, torch.full_like(out, 0.3))
    assert imresize(image, size=(5, 14)).shape[-2:] == (5, 14)


def test_imresize_is_differentiable_and_keeps_dtype():
    lr = torch.rand(1, 3, 6, 6, requires_grad=True)
    out = imresize(lr, scale=2)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert lr.grad is not None and torch.isfinite(lr.grad).all()


def test_sr_baseline_and_degradation_use_matlab_resize():
    hr = torch.rand(1, 3, 16, 24)
    lr = bicubic_downsample(hr, 4)
    torch.testing.assert_close(lr, imresize(hr, scale=1 / 4).clamp(0, 1))
    up = bicubic_upscale(lr, 4)
    torch.testing.assert_close(up, imresize(lr, scale=4).clamp(0, 1))
    assert bicubic_upscale(lr, 1) is lr

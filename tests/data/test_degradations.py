"""Degradations: exact bicubic, per-image random parameters, seeded determinism, config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featlab.data.degradations import (
    Degradation,
    bicubic_downsample,
    gaussian_blur,
    gaussian_noise,
    jpeg_compress,
    parse_range,
)
from featlab.errors import ConfigError

FULL = dict(blur_sigma=[0.5, 2.0], noise_sigma=[2.0, 10.0], jpeg_quality=[40, 90])


def smooth_images(batch: int = 2, size: int = 32) -> torch.Tensor:
    """Smooth random images (upsampled noise) so JPEG and blur act like on photos."""
    torch.manual_seed(0)
    return F.interpolate(torch.rand(batch, 3, size // 4, size // 4), size=(size, size), mode="bilinear")


def test_bicubic_downsample_is_antialiased_bicubic_clamped():
    hr = torch.rand(2, 3, 24, 36)
    lr = bicubic_downsample(hr, 4)
    expected = F.interpolate(hr, size=(6, 9), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert lr.shape == (2, 3, 6, 9)
    assert ((lr >= 0) & (lr <= 1)).all()
    # MATLAB imresize: PyTorch's antialiased bicubic inside; mirrored (not truncated) at the borders
    torch.testing.assert_close(lr[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2])
    assert bicubic_downsample(hr, 1) is hr


def test_bicubic_downsample_of_a_constant_image_is_the_constant():
    hr = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(bicubic_downsample(hr, 2), torch.full((1, 3, 8, 8), 0.3), atol=1e-6)


def test_bicubic_downsample_rejects_sizes_not_divisible_by_scale():
    with pytest.raises(ConfigError, match="data.scale"):
        bicubic_downsample(torch.rand(1, 3, 10, 12), 4)


def test_bicubic_only_degradation_equals_bicubic_downsample():
    hr = smooth_images()
    degradation = Degradation(scale=2)
    assert degradation.is_bicubic_only
    assert torch.equal(degradation(hr), bicubic_downsample(hr, 2))


def test_gaussian_blur_uses_one_sigma_per_image():
    image = smooth_images(batch=1).expand(3, -1, -1, -1)
    out = gaussian_blur(image, torch.tensor([0.0, 1.0, 3.0]))
    assert torch.allclose(out[0], image[0], atol=1e-6)  # sigma 0 is the identity
    roughness = [(o[..., 1:] - o[..., :-1]).abs().mean().item() for o in out]
    assert roughness[0] > roughness[1] > roughness[2]
    constant = torch.full((1, 3, 12, 12), 0.7)
    assert torch.allclose(gaussian_blur(constant, 2.0), constant, atol=1e-6)


def test_gaussian_noise_sigma_is_in_8bit_levels():
    image = torch.full((2, 3, 96, 96), 0.5)
    noisy = gaussian_noise(image, torch.tensor([5.0, 20.0]), torch.Generator().manual_seed(0))
    std = (noisy - image).flatten(1).std(dim=1) * 255
    assert std[0].item() == pytest.approx(5.0, rel=0.05)
    assert std[1].item() == pytest.approx(20.0, rel=0.05)


def test_jpeg_quality_controls_the_error():
    image = smooth_images(batch=1, size=64)
    errors = [(jpeg_compress(image, q) - image).abs().mean().item() for q in (95, 50, 10)]
    out = jpeg_compress(image, 10)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert 0.0 < errors[0] < errors[1] < errors[2]


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_full_degradation_shapes_and_range(scale):
    hr = smooth_images(batch=3)
    lr = Degradation(scale, **FULL)(hr)
    assert lr.shape == (3, 3, 32 // scale, 32 // scale)
    assert lr.min() >= 0.0 and lr.max() <= 1.0


def test_same_seed_same_output_other_seed_other_output():
    hr = smooth_images()
    first = Degradation(2, **FULL, seed=7)(hr)
    again = Degradation(2, **FULL, seed=7)(hr)
    other = Degradation(2, **FULL, seed=8)(hr)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_seeded_degradation_continues_its_stream_and_explicit_generators_repeat():
    hr = smooth_images()
    degradation = Degradation(2, **FULL, seed=7)
    assert not torch.equal(degradation(hr), degradation(hr))  # a stream, not one frozen draw
    a = degradation(hr, generator=torch.Generator().manual_seed(3))
    b = degradation(hr, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_unseeded_degradation_follows_the_global_rng():
    hr = smooth_images()
    degradation = Degradation(2, **FULL)
    torch.manual_seed(11)
    a = degradation(hr)
    torch.manual_seed(11)
    assert torch.equal(a, degradation(hr))


def test_random_parameters_differ_per_image():
    hr = smooth_images(batch=1).expand(4, -1, -1, -1)
    lr = Degradation(2, blur_sigma=[0.1, 3.0], seed=0)(hr)
    assert not torch.allclose(lr[0], lr[1])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"scale": 0}, "data.scale"),
     ({"scale": 2, "noise_sigma": [5, 1]}, "data.degradation.noise_sigma"),
     ({"scale": 2, "jpeg_quality": 0}, "data.degradation.jpeg_quality"),
     ({"scale": 2, "blur_sigma": [1, 2, 3]}, "data.degradation.blur_sigma")],
)
def test_bad_settings_name_the_config_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Degradation(**kwargs)


def test_parse_range_accepts_null_number_and_pair():
    assert parse_range(None, "k", 0, 10) is None
    assert parse_range(3, "k", 0, 10) == (3.0, 3.0)
    assert parse_range([1, 2.5], "k", 0, 10) == (1.0, 2.5)

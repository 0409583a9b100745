"""SR metrics against hand computations and an independent NumPy implementation of SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

from featlab.metrics.sr import SRMetrics, ms_ssim, ms_ssim_scales, psnr, psnr_y, rgb_to_y, ssim, ssim_y


def levels(values: np.ndarray) -> torch.Tensor:
    """8-bit levels (B, 3, H, W) -> float image in [0, 1]."""
    return torch.as_tensor(values, dtype=torch.float32) / 255.0


def grey(level: float, size: int = 16, batch: int = 1) -> torch.Tensor:
    return torch.full((batch, 3, size, size), level / 255.0)


@pytest.mark.parametrize(
    ("rgb", "expected_y"),
    [((0, 0, 0), 16.0), ((1, 1, 1), 235.0), ((1, 0, 0), 16 + 65.481), ((0, 1, 0), 16 + 128.553),
     ((0, 0, 1), 16 + 24.966)],
)
def test_rgb_to_y_of_pure_colours_follows_bt601(rgb, expected_y):
    image = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    y = rgb_to_y(image)
    assert y.shape == (1, 1, 2, 2)
    assert torch.allclose(y * 255, torch.full_like(y, expected_y))


def test_psnr_y_of_a_grey_offset_matches_hand_computation():
    # A grey RGB offset of d levels moves Y by d * 219 / 255 levels.
    values = psnr_y(grey(110), grey(100))
    expected = 20 * math.log10(255 / (10 * 219 / 255))
    assert values.shape == (1,)
    assert values.item() == pytest.approx(expected, abs=1e-4)


def test_psnr_y_of_a_y_offset_of_ten_levels_is_exactly_20log10_25_5():
    offset = 10 * 255 / 219  # RGB offset that moves Y by exactly 10 levels
    values = psnr_y(grey(100 + offset), grey(100), quantize=False)
    assert values.item() == pytest.approx(20 * math.log10(255 / 10), abs=1e-4)


def test_rgb_psnr_of_ten_levels_everywhere():
    assert psnr(grey(110), grey(100), y_channel=False).item() == pytest.approx(20 * math.log10(25.5), abs=1e-4)


def test_data_range_255_gives_the_same_numbers():
    sr, hr = torch.rand(2, 3, 20, 20), torch.rand(2, 3, 20, 20)
    assert torch.allclose(psnr_y(sr * 255, hr * 255, data_range=255.0), psnr_y(sr, hr))
    assert torch.allclose(ssim_y(sr * 255, hr * 255, data_range=255.0), ssim_y(sr, hr))


def test_quantize_rounds_to_8_bit_before_measuring():
    hr = levels(np.random.default_rng(0).integers(0, 256, (1, 3, 16, 16)))
    sr = hr + 0.4 / 255  # rounds back onto hr's levels
    assert psnr_y(sr, hr, quantize=True).item() > 100  # identical after quantisation (finite cap)
    assert psnr_y(sr, hr, quantize=False).item() < 60


def test_values_are_per_image():
    hr = grey(100, batch=3)
    sr = torch.cat([grey(100), grey(105), grey(120)])
    values = psnr_y(sr, hr)
    assert values.shape == (3,)
    assert values[0] > values[1] > values[2]
    assert torch.allclose(values[1:], torch.cat([psnr_y(sr[1:2], hr[1:2]), psnr_y(sr[2:3], hr[2:3])]))


def test_crop_border_ignores_errors_in_the_border():
    hr = levels(np.random.default_rng(1).integers(0, 256, (1, 3, 24, 24)))
    sr = hr.clone()
    sr[..., :3, :] = 0.0  # damage only the top 3 rows
    assert psnr_y(sr, hr, crop_border=0).item() < 40
    assert psnr_y(sr, hr, crop_border=3).item() > 100
    assert ssim_y(sr, hr, crop_border=3).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim_y(sr, hr, crop_border=2).item() < 1.0


def test_ssim_of_identical_images_is_one():
    image = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim_y(image, image), torch.ones(2))
    assert torch.allclose(ssim(image, image, y_channel=False), torch.ones(2))


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM written directly from the formula: 11x11 Gaussian (sigma 1.5), valid region, [0, 255]."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(img):
        return convolve2d(img, window, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def test_ssim_y_matches_a_direct_numpy_implementation():
    rng = np.random.default_rng(2)
    hr_levels = rng.integers(0, 256, (1, 3, 23, 19))
    sr_levels = np.clip(hr_levels + rng.integers(-120, 121, hr_levels.shape), 0, 255)
    hr, sr = levels(hr_levels), levels(sr_levels)

    def y_of(v):
        return (np.tensordot([65.481, 128.553, 24.966], v[0] / 255.0, axes=1) + 16.0)

    expected = reference_ssim(y_of(sr_levels), y_of(hr_levels))
    assert 0.2 < expected < 0.95  # a non-trivial case
    assert ssim_y(sr, hr).item() == pytest.approx(expected, abs=1e-6)
    # scikit-image with the Wang et al. settings is a second, independent reference.
    skimage_value = structural_similarity(y_of(sr_levels), y_of(hr_levels), gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=255.0)
    assert ssim_y(sr, hr).item() == pytest.approx(skimage_value, abs=1e-5)


def test_ssim_needs_a_full_window_after_cropping():
    image = torch.rand(1, 3, 14, 14)
    with pytest.raises(ValueError, match="crop_border=2"):
        ssim_y(image, image, crop_border=2)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="one shape"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


def test_sr_metrics_average_per_image_over_batches():
    torch.manual_seed(0)
    hr = torch.rand(5, 3, 16, 16)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    metric = SRMetrics(crop_border=2)
    metric.update(sr[:2], hr[:2])
    metric.update(sr[2:], hr[2:])
    result = metric.compute()
    assert result["psnr"].item() == pytest.approx(psnr_y(sr, hr, crop_border=2).mean().item(), abs=1e-4)
    assert result["ssim"].item() == pytest.approx(ssim_y(sr, hr, crop_border=2).mean().item(), abs=1e-6)


def test_sr_metrics_states_sum_across_ranks():
    """Merging two 'ranks' (the states DDP sums) gives the mean over all images, not a mean of means."""
    torch.manual_seed(1)
    hr = torch.rand(3, 3, 16, 16)
    sr = (hr + torch.tensor([0.01, 0.05, 0.1]).view(3, 1, 1, 1) * torch.randn_like(hr)).clamp(0, 1)
    rank0, rank1, everything = SRMetrics(), SRMetrics(), SRMetrics()
    rank0.update(sr[:1], hr[:1])
    rank1.update(sr[1:], hr[1:])
    everything.update(sr, hr)
    names = {name: getattr(fx, "__name__", fx) for name, fx in rank0._reductions.items()}
    assert names.pop("ms_ssim_scales") in ("min", "dim_zero_min")  # the fewest scales any image had
    assert all(fx in ("sum", "dim_zero_sum") for fx in names.values())
    rank1.update(torch.rand(1, 3, 13, 13), torch.rand(1, 3, 13, 13))  # a small image: 2 scales on rank 1
    everything.update(torch.rand(1, 3, 13, 13), torch.rand(1, 3, 13, 13))
    rank0.merge_state(rank1)
    assert rank0.compute()["ms_ssim_scales"].item() == everything.compute()["ms_ssim_scales"].item() == 2.0
    for name in ("psnr", "ssim"):
        assert not torch.allclose(rank0.compute()[name], everything.compute()[name])  # other random images
    rank2, whole = SRMetrics(), SRMetrics()
    rank2.update(sr[:1], hr[:1])
    rank3 = SRMetrics()
    rank3.update(sr[1:], hr[1:])
    whole.update(sr, hr)
    rank2.merge_state(rank3)
    for name in ("psnr", "ssim", "ms_ssim"):
        assert torch.allclose(rank2.compute()[name], whole.compute()[name])


def test_empty_metric_is_nan_not_zero():
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(SRMetrics().compute()["psnr"].item())


# -- MS-SSIM ----------------------------------------------------------------------------------------
MS_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def reference_ms_ssim(a: np.ndarray, b: np.ndarray, scales: int) -> float:
    """MS-SSIM written from the formula in NumPy, with torchmetrics' conventions: each scale's
    statistics under an 11x11 Gaussian (sigma 1.5) on the reflect-padded image; the contrast term
    averaged over the unpadded region, the full SSIM at the coarsest scale over the whole image;
    negatives clipped to 0; 2x2 mean pooling between scales; exponents of the kept scales
    renormalised to sum to 1."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    betas = np.array(MS_BETAS[:scales]) / sum(MS_BETAS[:scales])
    result = 1.0
    for level in range(scales):
        def filt(img):
            return convolve2d(np.pad(img, 5, mode="reflect"), window[::-1, ::-1], mode="valid")

        mu_a, mu_b = filt(a), filt(b)
        var_a, var_b = np.maximum(filt(a * a) - mu_a**2, 0), np.maximum(filt(b * b) - mu_b**2, 0)
        cov = filt(a * b) - mu_a * mu_b
        cs = (2 * cov + c2) / (var_a + var_b + c2)
        if level < scales - 1:
            result *= max(cs[5:-5, 5:-5].mean(), 0.0) ** betas[level]
            h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
            a = a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            b = b[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        else:
            full = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs
            result *= max(full.mean(), 0.0) ** betas[level]
    return float(result)


def noisy_pair(seed: int, height: int, width: int, noise: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (1, 3, height // 8 + 1, width // 8 + 1)).repeat(8, axis=2).repeat(8, axis=3)
    hr_levels = smooth[..., :height, :width]
    sr_levels = np.clip(hr_levels + rng.integers(-noise, noise + 1, hr_levels.shape), 0, 255)
    return sr_levels, hr_levels


def y_levels(v: np.ndarray) -> np.ndarray:
    return np.tensordot([65.481, 128.553, 24.966], v[0] / 255.0, axes=1) + 16.0


@pytest.mark.parametrize(("size", "crop", "scales"), [((48, 52), 2, 3), ((30, 40), 0, 2), ((184, 190), 4, 5)])
def test_ms_ssim_matches_a_direct_numpy_implementation(size, crop, scales):
    sr_levels, hr_levels = noisy_pair(3, *size)
    height, width = size[0] - 2 * crop, size[1] - 2 * crop
    assert ms_ssim_scales(height, width) == scales  # 44..98 px: 3, 12..43: 2, >= 176: all 5
    cut = (slice(crop, -crop or None),) * 2
    expected = reference_ms_ssim(y_levels(sr_levels)[cut], y_levels(hr_levels)[cut], scales)
    assert 0.3 < expected < 0.99  # a non-trivial case
    assert ms_ssim(levels(sr_levels), levels(hr_levels), crop_border=crop).item() == pytest.approx(expected, abs=1e-5)


def test_ms_ssim_scale_counts_follow_the_short_side():
    assert [ms_ssim_scales(n, 500) for n in (11, 12, 43, 44, 98, 99, 175, 176)] == [1, 2, 2, 3, 3, 4, 4, 5]
    image = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="fits 1 to 3 scales, got 5"):
        ms_ssim(image, image, scales=5)


def test_srmetrics_reports_ms_ssim_and_its_scale_count(caplog, monkeypatch):
    sr_levels, hr_levels = noisy_pair(4, 72, 72)
    metric, bicubic_twin = SRMetrics(crop_border=4), SRMetrics(crop_border=4)  # 64 px left: 3 scales
    monkeypatch.setattr("featlab.metrics.sr._TOLD_SIZES", set())
    with caplog.at_level("INFO", logger="featlab.metrics.sr"):
        metric.update(levels(sr_levels), levels(hr_levels))
        metric.update(levels(hr_levels), levels(hr_levels))
        bicubic_twin.update(levels(hr_levels), levels(hr_levels))
    values = metric.compute()
    single = ms_ssim(levels(sr_levels), levels(hr_levels), crop_border=4).item()
    assert values["ms_ssim"].item() == pytest.approx((single + 1.0) / 2, abs=1e-6)  # mean over images
    assert values["ms_ssim_scales"].item() == 3.0
    told = [r.getMessage() for r in caplog.records if "MS-SSIM" in r.getMessage()]
    assert len(told) == 1 and "uses 3 of 5 scales" in told[0]  # one line, not one per batch or metric

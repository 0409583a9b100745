"""PSNR and SSIM the way SR papers report them, so our numbers compare with published tables.

The protocol (MATLAB's, as reproduced by BasicSR): quantise the output to 8 bits, convert to the
BT.601 luma channel Y in [16, 235], drop ``crop_border`` pixels (usually the scale) on every side,
and measure on the [0, 255] scale; SSIM uses an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, over the valid region only. Values are per image, ``(B,)``, because benchmark scores
are means over images, not over pixels.

MS-SSIM (Wang, Simoncelli & Bovik 2003) is torchmetrics' implementation on the same prepared
image (8-bit, Y, border-cropped, [0, 255]) with the same window and constants. Its five scales
need at least 176 px on the short side after cropping (torchmetrics' check: side // 16 > 10);
smaller images are measured with the most scales that fit, the finest ones, their exponents
renormalised to sum to 1 (a 256 px image gets 5, 128 px 4, 64 px 3, 12 px 2). A value on
fewer scales is not comparable with a 5-scale one, so the scale count is reported beside it
(``ms_ssim_scales``, the fewest over the benchmark) and logged once per image size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torchmetrics import Metric

# ITU-R BT.601 luma for RGB in [0, 1], giving Y in [16, 235] (MATLAB rgb2ycbcr).
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
PEAK = 255.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
MSE_FLOOR = 1e-10  # keeps PSNR of identical images finite (~148 dB) so means stay finite
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first

log = logging.getLogger(__name__)
_TOLD_SIZES: set[tuple[int, int, int]] = set()  # image sizes whose MS-SSIM scale count was logged (once a process)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` in [0, 1] -> luma ``(B, 1, H, W)`` in [16/255, 235/255]."""
    weights = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x * weights).sum(dim=1, keepdim=True) + Y_OFFSET) / PEAK


def _prepare(sr: torch.Tensor, hr: torch.Tensor, crop_border: int, data_range: float,
             quantize: bool, y_channel: bool, min_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images on the [0, 255] float64 scale, optionally 8-bit, Y-only and border-cropped."""
    if sr.shape != hr.shape or sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(f"SR metrics need two (B, 3, H, W) images of one shape, got {tuple(sr.shape)} "
                         f"and {tuple(hr.shape)}")
    prepared = []
    for image in (sr, hr):
        x = image.detach().to(torch.float64) / data_range
        if quantize:
            x = x.clamp(0.0, 1.0).mul(PEAK).round().div(PEAK)
        if y_channel:
            x = rgb_to_y(x)
        x = x * PEAK
        if crop_border > 0:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        prepared.append(x)
    h, w = prepared[0].shape[-2:]
    if min(h, w) < min_size:
        raise ValueError(f"images of {tuple(sr.shape[-2:])} leave {h}x{w} pixels after crop_border={crop_border}; "
                         f"at least {min_size}x{min_size} are needed")
    return prepared[0], prepared[1]


def psnr(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, data_range: float = 1.0,
         quantize: bool = True, y_channel: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB, ``(B,)``; ``y_channel=False`` measures all RGB channels (restoration)."""
    a, b = _prepare(sr, hr, crop_border, data_range, quantize, y_channel)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3)).clamp_min(MSE_FLOOR)
    return (10.0 * torch.log10(PEAK**2 / mse)).float()


def _gaussian_window(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - SSIM_WINDOW // 2
    g = torch.exp(-coords.pow(2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, data_range: float = 1.0,
         quantize: bool = True, y_channel: bool = True) -> torch.Tensor:
    """Per-image SSIM, ``(B,)``: the mean of the SSIM map over the valid (unpadded) region."""
    a, b = _prepare(sr, hr, crop_border, data_range, quantize, y_channel, min_size=SSIM_WINDOW)
    channels = a.shape[1]
    window = _gaussian_window(channels, a.dtype, a.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.pow(2)
    var_b = blur(b * b) - mu_b.pow(2)
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.pow(2) + mu_b.pow(2) + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


def ms_ssim_scales(height: int, width: int, max_scales: int = len(MS_SSIM_BETAS)) -> int:
    """The most scales (finest first) torchmetrics can measure on an image of this size: each side
    // (scales - 1)^2 must exceed the window (its check), and the coarsest level must stay wider
    than the window's half, which reflection padding needs."""
    side = min(height, width)
    for scales in range(max_scales, 0, -1):
        if side // max(1, scales - 1) ** 2 > SSIM_WINDOW - 1 and side // 2 ** (scales - 1) > SSIM_WINDOW // 2:
            return scales
    return 0


def ms_ssim(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, data_range: float = 1.0,
            quantize: bool = True, y_channel: bool = True, scales: int | None = None) -> torch.Tensor:
    """Per-image MS-SSIM, ``(B,)``, on as many scales as the image allows (or ``scales``), the
    exponents of the kept scales renormalised to sum to 1."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    a, b = _prepare(sr, hr, crop_border, data_range, quantize, y_channel, min_size=SSIM_WINDOW)
    fit = ms_ssim_scales(*a.shape[-2:])
    scales = fit if scales is None else scales
    if not 1 <= scales <= fit:
        raise ValueError(f"MS-SSIM on {tuple(a.shape[-2:])} pixels after crop_border={crop_border} fits 1 to {fit} "
                         f"scales, got {scales}")
    betas = MS_SSIM_BETAS[:scales]
    betas = tuple(beta / sum(betas) for beta in betas)
    # relu (torchmetrics' default): a negative contrast term would make a fractional power NaN
    values = multiscale_structural_similarity_index_measure(
        a, b, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW, reduction="none",
        data_range=PEAK, k1=SSIM_K1, k2=SSIM_K2, betas=betas, normalize="relu")
    return values.reshape(-1).float()


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, data_range: float = 1.0,
           quantize: bool = True) -> torch.Tensor:
    """PSNR on the Y channel (the SR benchmark number), per image ``(B,)``."""
    return psnr(sr, hr, crop_border, data_range, quantize, y_channel=True)


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, data_range: float = 1.0,
           quantize: bool = True) -> torch.Tensor:
    """SSIM on the Y channel (the SR benchmark number), per image ``(B,)``."""
    return ssim(sr, hr, crop_border, data_range, quantize, y_channel=True)


class SRMetrics(Metric):
    """Mean per-image PSNR, SSIM, MS-SSIM (and LPIPS or other scorers when given) over a benchmark; sums and counts reduce by sum
    across ranks, the MS-SSIM scale count by min (the fewest any image was measured on).

    Keep one instance per benchmark (e.g. in a ``ModuleDict``) so Set5 and Set14 never mix.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, crop_border: int = 0, y_channel: bool = True, quantize: bool = True,
                 data_range: float = 1.0, lpips: Callable[..., torch.Tensor] | None = None,
                 scorers: Mapping[str, Callable[..., torch.Tensor]] | None = None, **kwargs) -> None:
        """``lpips``: a shared scorer (``metrics.lpips.build_lpips``) adds ``lpips`` to the results;
        ``scorers``: more per-image distances by name (e.g. ``feature_distance``,
        ``metrics.feature_distance``), called like LPIPS on the same images. Scorers are held outside
        the module tree so one network serves every benchmark and is never saved in checkpoints."""
        super().__init__(**kwargs)
        named = {"lpips": lpips} if lpips is not None else {}
        for name, scorer in (scorers or {}).items():
            if name in named or name in ("psnr", "ssim", "ms_ssim", "ms_ssim_scales", "count"):
                raise ValueError(f"SRMetrics scorer name '{name}' is taken")
            named[name] = scorer
        self._scorers = tuple(named.items())  # a tuple: not a submodule, not checkpointed
        self.crop_border = crop_border
        self.y_channel = y_channel
        self.quantize = quantize
        self.data_range = data_range
        # lpips_sum always, so checkpoints of runs with and without LPIPS load into each other
        for name in ("psnr_sum", "ssim_sum", "ms_ssim_sum", "lpips_sum", "count",
                     *(f"{n}_sum" for n in named if n != "lpips")):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ms_ssim_scales", default=torch.tensor(float(len(MS_SSIM_BETAS)), dtype=torch.float64),
                       dist_reduce_fx="min")

    def update(self, sr: torch.Tensor, hr: torch.Tensor) -> None:
        options = dict(crop_border=self.crop_border, data_range=self.data_range, quantize=self.quantize,
                       y_channel=self.y_channel)
        self.psnr_sum += psnr(sr, hr, **options).double().sum()
        self.ssim_sum += ssim(sr, hr, **options).double().sum()
        height, width = (size - 2 * self.crop_border for size in sr.shape[-2:])
        scales = ms_ssim_scales(height, width)
        if scales < len(MS_SSIM_BETAS) and (height, width, self.crop_border) not in _TOLD_SIZES:
            log.info("MS-SSIM on %dx%d px (after crop_border=%d) uses %d of %d scales, exponents renormalised "
                     "(5 need >= 176 px): not comparable with 5-scale values", height, width, self.crop_border,
                     scales, len(MS_SSIM_BETAS))
            _TOLD_SIZES.add((height, width, self.crop_border))
        self.ms_ssim_sum += ms_ssim(sr, hr, **options, scales=scales).double().sum()
        self.ms_ssim_scales = torch.minimum(self.ms_ssim_scales, torch.tensor(float(scales), dtype=torch.float64,
                                                                               device=self.ms_ssim_scales.device))
        for name, scorer in self._scorers:
            value = scorer(sr, hr, crop_border=self.crop_border, data_range=self.data_range, quantize=self.quantize)
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + value.double().sum())
        self.count += sr.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        # 0 / 0 gives NaN: an empty benchmark shows up as NaN instead of a plausible-looking 0.
        return {"psnr": (self.psnr_sum / self.count).float(), "ssim": (self.ssim_sum / self.count).float(),
                "ms_ssim": (self.ms_ssim_sum / self.count).float(), "ms_ssim_scales": self.ms_ssim_scales.float(),
                **{name: (getattr(self, f"{name}_sum") / self.count).float() for name, _ in self._scorers}}

"""Cross-batch quantities are DDP-correct: 2 gloo processes on uneven shards == one process on all.

Uneven shards matter: a rank-average of rank-means only equals the global mean when every rank
sees the same number of samples, so an implementation that averages per rank would pass an even
split and fail here. One spawn serves every check (starting processes is the expensive part).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
SHARDS = (slice(0, 5), slice(5, 7))  # rank 0 gets 5 samples, rank 1 gets 2


def sr_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Seven (SR, HR) pairs with very different errors, so per-rank means differ from the global one."""
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(7, 3, 24, 24, generator=gen)
    noise = torch.randn(7, 3, 24, 24, generator=gen) * torch.linspace(0.01, 0.3, 7).view(7, 1, 1, 1)
    return (hr + noise).clamp(0, 1), hr


def feature_maps() -> torch.Tensor:
    """Backbone-like (B, C, h, w) features whose scale grows along the batch."""
    gen = torch.Generator().manual_seed(1)
    return torch.randn(7, 16, 5, 5, generator=gen) * torch.linspace(0.5, 4.0, 7).view(7, 1, 1, 1) + 1.0


def sr_metric_values(sr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
    from featlab.metrics.sr import SRMetrics

    metric = SRMetrics(crop_border=2)
    for i in range(sr.shape[0]):  # one image per batch, as benchmark loaders do
        metric.update(sr[i:i + 1], hr[i:i + 1])
    return {k: float(v) for k, v in metric.compute().items()}


def standardize_stats(features: torch.Tensor) -> dict[str, torch.Tensor]:
    """The extractor's per-layer standardizer (what ``fx.freeze_statistics()`` freezes), fed per sample."""
    from featlab.backbones.featnorm import ChannelStandardizer

    module = ChannelStandardizer(features.shape[1])
    for i in range(features.shape[0]):
        module.update(features[i:i + 1])
    module.freeze()
    return {"mean": module.mean.clone(), "std": module.std.clone()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        sr, hr = sr_pairs()
        shard = SHARDS[rank]
        results = {"sr_metrics": sr_metric_values(sr[shard], hr[shard]),
                   "standardize": standardize_stats(feature_maps()[shard])}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    """What each of two gloo ranks computed on its shard (after the library's own all-reduce)."""
    out = tmp_path_factory.mktemp("ddp")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import featlab.backbones.featnorm  # noqa: F401  imported before forking: ranks start in milliseconds
    import featlab.metrics.sr  # noqa: F401

    mp.start_processes(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True,
                       start_method="fork")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_sr_metrics_under_ddp_equal_the_single_process_mean_over_all_images(ddp_results):
    sr, hr = sr_pairs()
    reference = sr_metric_values(sr, hr)
    per_rank_local = [sr_metric_values(sr[s], hr[s]) for s in SHARDS]
    naive = sum(r["psnr"] for r in per_rank_local) / WORLD
    assert abs(naive - reference["psnr"]) > 0.1  # the uneven split would expose a mean of rank-means
    for rank_result in ddp_results:
        for key in ("psnr", "ssim", "ms_ssim", "ms_ssim_scales"):
            assert rank_result["sr_metrics"][key] == pytest.approx(reference[key], abs=1e-5)


def test_standardize_statistics_under_ddp_equal_single_process_statistics(ddp_results):
    reference = standardize_stats(feature_maps())
    local_rank0 = standardize_stats(feature_maps()[SHARDS[0]])
    assert not torch.allclose(local_rank0["mean"], reference["mean"], atol=1e-4)
    for rank_result in ddp_results:
        torch.testing.assert_close(rank_result["standardize"]["mean"], reference["mean"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rank_result["standardize"]["std"], reference["std"], atol=1e-5, rtol=1e-5)

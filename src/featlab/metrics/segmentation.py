"""Unsupervised object-segmentation scores: FG-ARI, mBO, and a colour-uniformity proxy.

- **FG-ARI**: adjusted Rand index between the ground-truth instances and the predicted slot
  assignment over *foreground* pixels only (ground-truth id 0 is background and excluded), the
  standard object-discovery score since IODINE/Slot Attention. It ignores how background is split
  and is invariant to relabelling on either side.
- **mBO** (mean best overlap, as in DINOSAUR): for each ground-truth object the best IoU with any
  predicted segment, averaged over the objects of an image; unlike FG-ARI it penalises masks that
  bleed into the background.
- **slot colour std** (WEAK PROXY, kept because the seed study reported it): the mean over slots of
  the colour standard deviation of the pixels a slot owns. It is low when slots cover uniformly
  coloured regions, which a good object split gives on flat-coloured shapes, but splitting by
  colour alone scores just as well and it knows nothing of instances. Never rank models by it.

Both real scores are computed from a contingency table built with one ``bincount``, so they are
exact, cheap on large images, and identical on CPU and GPU. Per-image scores are summed into
``torchmetrics`` states with ``dist_reduce_fx="sum"``, so DDP gives the dataset mean.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from featlab.errors import require

log = logging.getLogger(__name__)


def masks_to_ids(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) soft slot masks -> (B, H, W) slot ids: bilinear upsampling, then argmax."""
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)
    return masks.argmax(dim=1)


def contingency_table(true_ids: torch.Tensor, pred_ids: torch.Tensor,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, P) pixel counts of (true id, predicted id) pairs per image, over ``valid`` pixels."""
    require(true_ids.shape == pred_ids.shape, "data.masks",
            f"ground-truth masks {tuple(true_ids.shape)} and predictions {tuple(pred_ids.shape)} differ in size")
    batch = true_ids.shape[0]
    t = true_ids.reshape(batch, -1).long()
    p = pred_ids.reshape(batch, -1).long()
    require(bool((t >= 0).all()) and bool((p >= 0).all()), "data.masks", "instance ids must be >= 0")
    n_true, n_pred = int(t.max()) + 1, int(p.max()) + 1
    offset = torch.arange(batch, device=t.device).unsqueeze(1) * (n_true * n_pred)
    index = offset + t * n_pred + p
    if valid is not None:
        index = index[valid.reshape(batch, -1)]
    counts = torch.bincount(index.reshape(-1), minlength=batch * n_true * n_pred)
    return counts.reshape(batch, n_true, n_pred)


def _pairs(x: torch.Tensor) -> torch.Tensor:
    return x * (x - 1) / 2


def ari_from_table(table: torch.Tensor) -> torch.Tensor:
    """Adjusted Rand index per image from a (B, T, P) contingency table; NaN below two pixels.

    When both partitions are a single cluster (or both all singletons) the formula is 0/0; the
    partitions are then identical and the score is 1, the usual convention.
    """
    n_ij = table.double()
    a, b = n_ij.sum(dim=2), n_ij.sum(dim=1)
    n = a.sum(dim=1)
    index = _pairs(n_ij).sum(dim=(1, 2))
    sum_a, sum_b, total = _pairs(a).sum(dim=1), _pairs(b).sum(dim=1), _pairs(n)
    expected = sum_a * sum_b / total.clamp_min(1)
    maximum = (sum_a + sum_b) / 2
    ari = (index - expected) / (maximum - expected)
    degenerate = ((sum_a == total) & (sum_b == total)) | ((sum_a == 0) & (sum_b == 0))
    ari = torch.where(degenerate, torch.ones_like(ari), ari)
    return torch.where(n < 2, torch.full_like(ari, float("nan")), ari)


def adjusted_rand_index(true_ids: torch.Tensor, pred_ids: torch.Tensor,
                        ignore_background: bool = True) -> torch.Tensor:
    """(B,) ARI per image; with ``ignore_background`` (FG-ARI) pixels with true id 0 are left out."""
    valid = true_ids != 0 if ignore_background else None
    return ari_from_table(contingency_table(true_ids, pred_ids, valid))


def mean_best_overlap(true_ids: torch.Tensor, pred_ids: torch.Tensor,
                      ignore_background: bool = True) -> torch.Tensor:
    """(B,) mean over ground-truth objects of the best IoU with any predicted segment; NaN if none.

    IoUs are over all pixels, so a predicted mask that spills into the background loses overlap.
    """
    inter = contingency_table(true_ids, pred_ids).double()
    area_true, area_pred = inter.sum(dim=2), inter.sum(dim=1)
    union = area_true.unsqueeze(2) + area_pred.unsqueeze(1) - inter
    best = (inter / union.clamp_min(1)).amax(dim=2)
    present = area_true > 0
    if ignore_background:
        present[:, 0] = False
    count = present.sum(dim=1)
    mbo = (best * present).sum(dim=1) / count.clamp_min(1)
    return torch.where(count == 0, torch.full_like(mbo, float("nan")), mbo)


def position_regions(size: int | tuple[int, int], k: int, steps: int = 50) -> torch.Tensor:
    """(H, W) ids (``size`` = H = W, or (H, W)) of ``k`` compact regions that ignore the image: k-means of pixel positions.

    The FIXED-SPLIT BASELINE of slot models: on scenes of small objects spread over the image,
    FG-ARI ignores the background and such a split already scores well above 0 (~0.55 on the
    embedded scenes with 7 regions), so a slot model shows segmentation only above it. Lloyd steps
    from ``k`` random pixels of a generator seeded 0: the same regions on every call and machine.
    """
    height, width = (size, size) if isinstance(size, int) else size
    require(1 <= k <= height * width, "task.slots.num_slots", f"needs 1 <= k <= {height * width} regions, got {k}")
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    points = torch.stack([ys.flatten(), xs.flatten()], 1)
    generator = torch.Generator().manual_seed(0)
    centres = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    ids = torch.zeros(len(points), dtype=torch.long)
    for _ in range(steps):
        ids = torch.cdist(points, centres).argmin(1)
        centres = torch.stack([points[ids == j].mean(0) if (ids == j).any() else centres[j] for j in range(k)])
    return ids.reshape(height, width)


def slot_colour_std(images: torch.Tensor, pred_ids: torch.Tensor) -> torch.Tensor:
    """(B,) WEAK PROXY: mean over non-empty slots of the per-channel colour std of their pixels."""
    batch, channels = images.shape[:2]
    ids = pred_ids.reshape(batch, 1, -1).long()
    pixels = images.reshape(batch, channels, -1).double()
    n_slots = int(ids.max()) + 1
    count = torch.zeros(batch, 1, n_slots, dtype=torch.float64, device=images.device)
    count.scatter_add_(2, ids, torch.ones_like(pixels[:, :1]))
    total = torch.zeros(batch, channels, n_slots, dtype=torch.float64, device=images.device)
    total.scatter_add_(2, ids.expand(-1, channels, -1), pixels)
    squares = torch.zeros_like(total).scatter_add_(2, ids.expand(-1, channels, -1), pixels * pixels)
    mean = total / count.clamp_min(1)
    std = (squares / count.clamp_min(1) - mean * mean).clamp_min(0).sqrt().mean(dim=1)  # (B, S)
    occupied = count[:, 0] > 0
    return (std * occupied).sum(dim=1) / occupied.sum(dim=1).clamp_min(1)


def objects_per_image(true_ids: torch.Tensor) -> torch.Tensor:
    """(B,) number of distinct non-zero ids per image."""
    table = contingency_table(true_ids, torch.zeros_like(true_ids))
    present = table[:, :, 0] > 0
    present[:, 0] = False
    return present.sum(dim=1)


class SlotSegmentationMetrics(Metric):
    """Dataset means of FG-ARI, mBO and the colour-std proxy, DDP-reduced by summing."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_slots: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_slots = num_slots
        self.warned_too_many_objects = False
        for name in ("ari_sum", "ari_count", "mbo_sum", "mbo_count", "colour_sum", "colour_count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_ids: torch.Tensor, true_ids: torch.Tensor, images: torch.Tensor | None = None) -> None:
        """``pred_ids``/``true_ids``: (B, H, W) at image resolution; ``images``: (B, 3, H, W) in [0, 1]."""
        most = int(objects_per_image(true_ids).max()) if true_ids.numel() else 0
        if most > self.num_slots and not self.warned_too_many_objects:
            log.warning("an image has %d objects but the model has %d slots (task.slots.num_slots): "
                        "some objects must share a slot, FG-ARI is still computed", most, self.num_slots)
            self.warned_too_many_objects = True
        for prefix, values in (("ari", adjusted_rand_index(true_ids, pred_ids)),
                               ("mbo", mean_best_overlap(true_ids, pred_ids))):
            finite = torch.isfinite(values)
            setattr(self, f"{prefix}_sum", getattr(self, f"{prefix}_sum") + values[finite].sum())
            setattr(self, f"{prefix}_count", getattr(self, f"{prefix}_count") + finite.sum())
        if images is not None:
            self.colour_sum += slot_colour_std(images, pred_ids).sum()
            self.colour_count += images.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        def mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
            return (total / count).float() if count > 0 else torch.tensor(float("nan"))

        return {
            "fg_ari": mean(self.ari_sum, self.ari_count),
            "mbo": mean(self.mbo_sum, self.mbo_count),
            "proxy_slot_colour_std": mean(self.colour_sum, self.colour_count),
        }

"""Two references for slot models on the embedded scenes, scored like a model on its test scenes.

1. FIXED SPLIT: every image split the same way into k compact regions (k-means of the pixel
   positions, `featlab.metrics.segmentation.position_regions`; the slots task logs the k=num_slots
   score as `test/fg_ari_fixed_split`). FG-ARI ignores the background and the objects are small
   and spread out, so this scores ~0.55 with 7 regions: a slot model shows object segmentation on
   these scenes only above it, not above 0 (README "Positive control").
2. K-MEANS OF THE CONTROL'S FEATURES: per image, k-means (k=7, 30 Lloyd steps) of the 16x16 grid of
   patch (mean R, G, B, y, x) that `patch_rgbxy_control` gives the slot model, raw, with colour
   weighted by w. It shows what plain clustering of those features reaches without any learning.

    PYTHONPATH=src python experiments/slot_backbones/fixed_split_baseline.py [seed ...]

The scenes are the test split that `experiment=slots_* seed=<seed>` evaluates on (data.seed = seed).
"""

import sys

import torch
import torch.nn.functional as F

from featlab.backbones.control import PatchColourPosition
from featlab.data.scenes import SceneDataModule
from featlab.metrics.segmentation import adjusted_rand_index, mean_best_overlap, position_regions


def kmeans_ids(features: torch.Tensor, k: int, steps: int = 30) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w) cluster ids per image, from k random cells (generator seeded 0)."""
    batch, _, h, w = features.shape
    points = features.flatten(2).transpose(1, 2)
    start = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))[:k]
    centres = points[:, start].clone()
    for _ in range(steps):
        ids = torch.cdist(points, centres).argmin(-1)
        onehot = F.one_hot(ids, k).float()
        counts = onehot.sum(1).unsqueeze(-1)
        centres = torch.where(counts > 0, onehot.transpose(1, 2) @ points / counts.clamp_min(1), centres)
    return ids.reshape(batch, h, w)


def score(masks: torch.Tensor, pred: torch.Tensor) -> str:
    ari, mbo = adjusted_rand_index(masks, pred), mean_best_overlap(masks, pred)
    return f"FG-ARI {ari[ari.isfinite()].mean():.3f} mBO {mbo[mbo.isfinite()].mean():.3f}"


def main(seeds: list[int]) -> None:
    control = PatchColourPosition()
    for seed in seeds:
        data = SceneDataModule(num_train=256, num_val=32, num_test=32, num_workers=0, seed=seed)
        data.setup()
        test = data.datasets["test"]
        images = torch.stack([test[i]["image"] for i in range(len(test))])
        masks = torch.stack([test[i]["mask"] for i in range(len(test))])
        row = [f"split k={k}: " + score(masks, position_regions(masks.shape[-1], k).expand(len(masks), -1, -1))
               for k in (4, 7, 9, 16)]
        print(f"seed {seed} fixed split | " + " | ".join(row))
        features = control(images)
        row = []
        for weight in (1.0, 3.0):
            ids = kmeans_ids(torch.cat([features[:, :3] * weight, features[:, 3:]], 1), 7)
            pred = F.interpolate(ids[:, None].float(), size=masks.shape[-2:], mode="nearest")[:, 0].long()
            row.append(f"colour x{weight:g}: " + score(masks, pred))
        print(f"seed {seed} k-means of the control's features (k=7) | " + " | ".join(row))


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2])

"""FG-ARI / mBO of a FIXED, image-independent split of every image into k compact regions.

Why: FG-ARI ignores the background, and the embedded scenes' objects are small and spread out, so
splitting the image by position alone scores ~0.57 with 7 regions. A slot model only shows object
segmentation on these scenes if it beats this, not 0 (README "Positive control").

    PYTHONPATH=src python experiments/slot_backbones/fixed_split_baseline.py [seed ...]

The regions are k-means of the pixel positions (50 Lloyd steps from k random pixels, torch seed 0);
the scenes are the test split that `experiment=slots_* seed=<seed>` evaluates on (data.seed = seed).
"""

import sys

import torch

from featlab.data.scenes import SceneDataModule
from featlab.metrics.segmentation import adjusted_rand_index, mean_best_overlap


def position_regions(size: int, k: int) -> torch.Tensor:
    """(size, size) ids of k compact regions: k-means of the pixel coordinates."""
    torch.manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    points = torch.stack([ys.flatten(), xs.flatten()], 1)
    centres = points[torch.randperm(len(points))[:k]].clone()
    for _ in range(50):
        ids = torch.cdist(points, centres).argmin(1)
        centres = torch.stack([points[ids == j].mean(0) for j in range(k)])
    return ids.reshape(size, size)


def main(seeds: list[int]) -> None:
    for seed in seeds:
        data = SceneDataModule(num_train=256, num_val=32, num_test=32, num_workers=0, seed=seed)
        data.setup()
        test = data.datasets["test"]
        masks = torch.stack([test[i]["mask"] for i in range(len(test))])
        row = []
        for k in (4, 7, 9, 16):
            pred = position_regions(masks.shape[-1], k).expand(len(masks), -1, -1)
            ari, mbo = adjusted_rand_index(masks, pred), mean_best_overlap(masks, pred)
            row.append(f"k={k}: FG-ARI {ari[ari.isfinite()].mean():.3f} mBO {mbo[mbo.isfinite()].mean():.3f}")
        print(f"seed {seed}: " + " | ".join(row))


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2])

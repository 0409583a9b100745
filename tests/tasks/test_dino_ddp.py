"""Two CPU processes (gloo): the DINO centre and the kNN feature bank must be global, not per rank."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from featlab.callbacks.knn import extract_features
from featlab.losses.dino import DINOLoss

WORLD = 2
BATCH, OUT_DIM, NCROPS = 3, 5, 4


def teacher_batch(rank: int) -> torch.Tensor:
    return torch.randn(2 * BATCH, OUT_DIM, generator=torch.Generator().manual_seed(100 + rank))


def labelled_set() -> TensorDataset:
    """7 items: shards of 4 and 3, so the gather has to handle padding."""
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(7, 3, 4, 4, generator=g), torch.arange(7) % 3)


def embed(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)[:, :6] * 2 + 1


def _worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        loss = DINOLoss(OUT_DIM, NCROPS, center_momentum=0.9)
        student = torch.randn(NCROPS * BATCH, OUT_DIM)
        loss(student, teacher_batch(rank))
        both = torch.cat([teacher_batch(r) for r in range(WORLD)])
        assert torch.allclose(loss.center, 0.1 * both.mean(0, keepdim=True), atol=1e-6), "centre is not global"

        data = labelled_set()
        feats, labels = extract_features(embed, data, torch.device("cpu"), batch_size=2)
        assert torch.allclose(feats, embed(data.tensors[0])), "gathered features differ from one process"
        assert torch.equal(labels, data.tensors[1]), "gathered labels out of order"
    finally:
        dist.destroy_process_group()


def test_centre_and_knn_features_are_global_across_two_processes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"),), nprocs=WORLD, join=True)


def test_single_process_gather_is_the_identity():
    data = labelled_set()
    feats, labels = extract_features(embed, data, torch.device("cpu"), batch_size=3)
    assert torch.allclose(feats, embed(data.tensors[0])) and torch.equal(labels, data.tensors[1])

"""The DINO experiments through the real entry point (tiny crops; the experiments' defaults stay the recipe)."""

from __future__ import annotations

import math

from featlab.config import compose

SMALL = ["data.batch_size=2", "data.multicrop.global_crops_size=32", "data.multicrop.local_crops_size=16",
         "data.multicrop.local_crops_number=2", "data.synthetic.n_per_class=2", "net.out_dim=256"]


def test_dino_vits16_fast_dev_run_on_the_embedded_default(train_run):
    results, run_dir = train_run(["experiment=dino_vits16", "pretrained=false", "trainer.fast_dev_run=true", *SMALL])
    assert results["status"] == "finished", results["error"]
    metrics = results["metrics"]
    assert math.isfinite(metrics["train/loss"]) and 0.0 <= metrics["train/teacher_entropy_ratio"] <= 1.0
    assert {"val/knn_top1", "val/knn_top1_init", "test/knn_top1", "train/collapse_warning"} <= set(metrics)
    assert metrics["val/knn_top1_chance"] == metrics["test/knn_top1_chance"] > 0.0  # 1 / classes
    # the paired effect of training: the last kNN minus the same run's kNN before training
    assert abs(metrics["val/knn_top1_gain"] - (metrics["val/knn_top1"] - metrics["val/knn_top1_init"])) < 1e-6
    assert (run_dir / "results.json").exists()


def test_experiments_keep_the_real_recipe():
    vits = compose(["experiment=dino_vits16"])
    assert (vits.net.backbone, vits.net.out_dim, vits.net.hidden_dim, vits.net.bottleneck_dim) == ("dino_vits16", 4096, 1024, 256)
    crops = vits.data.multicrop
    assert (crops.global_crops_size, crops.local_crops_size, crops.local_crops_number) == (224, 96, 8)
    assert list(crops.global_crops_scale) == [0.4, 1.0] and list(crops.local_crops_scale) == [0.05, 0.4]
    assert (vits.callbacks.knn.k, vits.callbacks.knn.temperature) == (20, 0.07)
    assert (vits.task.momentum_teacher, vits.task.weight_decay_end, vits.loss.student_temp) == (0.996, 0.4, 0.1)
    paper = compose(["experiment=dino_vits16_paper"])
    assert (paper.net.hidden_dim, paper.net.bottleneck_dim, paper.net.out_dim) == (2048, 256, 65536)
    resnet = compose(["experiment=dino_resnet18"])
    assert resnet.net.backbone == "resnet18" and resnet.task.channels_last

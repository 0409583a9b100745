"""The face DSR task: a tiny overfit, then the real entry point on the embedded synthetic faces."""

from __future__ import annotations

import csv

import torch

from featlab.checkpoints import load_checkpoint, save_checkpoint
from featlab.metrics.identification import CSV_COLUMNS
from featlab.tasks.base import FeatlabTask
from featlab.tasks.dsr import FaceDSRTask

TINY = "edgeface_tiny_test"
TINY_RUN = ["task.recognizer.name=edgeface_tiny_test", "net.base_channels=8", "net.residual_blocks=1",
            "data.batch_size=4", "data.eval_batch_size=8"]


def tiny_task(identity_weight: float = 0.35) -> FaceDSRTask:
    return FaceDSRTask(
        net={"_target_": "featlab.nets.dsr.DSRNet", "scale": 4, "base_channels": 8, "residual_blocks": 1},
        loss={"pixel": {"_target_": "featlab.losses.pixel.PixelLoss", "kind": "l1", "weight": 1.0},
              "identity": {"_target_": "featlab.losses.identity.IdentityLoss", "backbone": TINY,
                           "pretrained": False, "weight": identity_weight}},
        recognizer={"name": TINY, "pretrained": False},
        channels_last=False,
    )


def test_loss_decreases_on_a_tiny_overfit_and_edgeface_is_shared():
    torch.manual_seed(0)
    task = tiny_task()
    assert task.loss.terms["identity"].embedder is task.recognizer  # one EdgeFace in memory
    hr = torch.rand(2, 3, 32, 32)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    optimizer = torch.optim.Adam(task.net.parameters(), lr=5e-3)
    losses = []
    for _ in range(15):
        total, terms = task.loss(task(lr), hr)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.7 * losses[0]
    assert set(terms) == {"pixel", "identity"}
    assert all(p.grad is None for p in task.recognizer.parameters())


def test_train_run_on_the_embedded_default(train_run, tmp_path):
    dump = tmp_path / "preds.csv"
    results, run_dir = train_run(["experiment=dsr_identity", "pretrained=false", "trainer.fast_dev_run=true",
                                  "data.batch_size=4", "data.eval_batch_size=4", f"dump_results={dump}",
                                  "use_tta=true"])
    assert results["status"] == "finished", results["error"]
    metrics = results["metrics"]
    for key in ("test/id_accuracy", "test/id_unknown_rate", "test/id_wrong_rate", "test/id_accuracy_bicubic",
                "test/id_accuracy_hr", "test/id_accuracy_chance", "test/psnr", "test/psnr_bicubic", "test/ms_ssim",
                "test/ms_ssim_bicubic", "val/ms_ssim", "val/psnr",
                "val/id_cos"):
        assert key in metrics, key
    total = metrics["test/id_accuracy"] + metrics["test/id_unknown_rate"] + metrics["test/id_wrong_rate"]
    assert abs(total - 1.0) < 1e-6
    assert 0.0 < metrics["test/id_accuracy_chance"] <= 0.5  # 1 / gallery identities (at least 2)
    assert metrics["test/id_accuracy_ci_low"] <= metrics["test/id_accuracy"] <= metrics["test/id_accuracy_ci_high"]
    assert metrics["test/id_accuracy_ci_high"] - metrics["test/id_accuracy_ci_low"] > 0.05  # a handful of probes
    assert [row["threshold"] for row in metrics["test/id_sweep"]["dsr"]] == [0.25, 0.3, 0.35, 0.4, 0.45]
    assert metrics["test/id_tta"] is True
    assert (run_dir / "identification_sweep.png").exists() and (run_dir / "identification_sweep.md").exists()
    with dump.open() as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1 + int(metrics["test/id_probes"])
    assert len({row[0] for row in rows[1:]}) == len(rows) - 1  # one row per distinct probe index
    assert dump.with_name("preds_bicubic.csv").exists()


def test_best_checkpoint_keeps_epoch_psnr_and_config_then_tests_via_dsr_gallery(train_run):
    results, run_dir = train_run(["experiment=dsr_identity", "pretrained=false", "loss=l1", *TINY_RUN,
                                  "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                                  "trainer.limit_val_batches=1", "task.scheduler.warmup_epochs=0",
                                  "gallery_via_dsr=true"])
    assert results["status"] == "finished", results["error"]
    best = results["best_checkpoint"]["path"]
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert abs(checkpoint["val_psnr"] - results["best_checkpoint"]["score"]) < 1e-4
    assert checkpoint["featlab_config"]["task"]["eval"]["threshold"] == 0.35
    assert "test/id_accuracy" in results["metrics"]  # tested from the best checkpoint
    assert results["metrics"]["test/id_gallery_via_dsr"] is True


def test_published_int8_recognizer_runs_int8_while_the_identity_loss_trains_on_it_dequantised(tmp_path):
    """task.recognizer.checkpoint=edgeface_xxs_q.pt (quantized=auto): the recognition test runs the
    published int8 model; the identity loss reads the same file as float weights and has gradients."""
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "official" / "edgeface_xxs_q" / "checkpoint.pth"

    def build() -> FaceDSRTask:
        return FaceDSRTask(
            net={"_target_": "featlab.nets.dsr.DSRNet", "scale": 4, "base_channels": 8, "residual_blocks": 1},
            loss={"identity": {"_target_": "featlab.losses.identity.IdentityLoss", "backbone": "edgeface_xxs_q",
                               "checkpoint": str(fixture), "weight": 1.0}},
            recognizer={"name": "edgeface_xxs_q", "checkpoint": str(fixture), "quantized": "auto"},
            channels_last=False,
        )

    task = build()
    identity = task.loss.terms["identity"].embedder
    assert task.recognizer.quantized and not identity.quantized and identity is not task.recognizer
    hr = torch.rand(2, 3, 32, 32)
    total, _ = task.loss(task(torch.nn.functional.avg_pool2d(hr, 4)), hr)
    total.backward()
    assert all(p.grad is not None for p in task.net.parameters() if p.requires_grad)
    # the int8 recogniser is rebuilt from the config like the float backbones: not in checkpoints
    checkpoint = {"state_dict": task.state_dict()}
    FeatlabTask.on_save_checkpoint(task, checkpoint)  # the part of the hook that needs no Trainer
    assert not any(key.startswith(("recognizer.", "loss.terms.identity.embedder.")) for key in checkpoint["state_dict"])
    save_checkpoint(checkpoint, tmp_path / "dsr.ckpt")
    checkpoint = load_checkpoint(tmp_path / "dsr.ckpt")
    # ... and a run evaluated from that file gets it back, int8 layers included (their module versions too)
    restored = build()
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"], strict=True)
    x = torch.rand(1, 3, 112, 112)
    torch.testing.assert_close(restored.recognizer(x), task.recognizer(x), rtol=0, atol=0)

"""Trainer presets compose to what they promise, and compile=true trains with unchanged checkpoints."""

from __future__ import annotations

import shutil

import pytest
import torch

from featlab.config import compose


def test_gpu_and_ddp_presets_compose_to_bf16_on_gpus():
    gpu = compose(["experiment=sisr_dino", "trainer=gpu"]).trainer
    assert (gpu.accelerator, gpu.devices, gpu.precision) == ("gpu", 1, "bf16-mixed")
    ddp = compose(["experiment=dino_resnet18", "trainer=ddp"]).trainer
    assert (ddp.accelerator, ddp.devices, ddp.strategy, ddp.precision) == ("gpu", -1, "ddp", "bf16-mixed")
    assert ddp.use_distributed_sampler


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on a CPU needs a C compiler (cc)")
def test_compile_true_trains_and_keeps_checkpoint_keys(train_run):
    """Module.compile in place: the run trains compiled, and checkpoints keep the plain ``net.`` keys
    that featlab.eval, upscale and export_onnx read."""
    overrides = ["experiment=sisr_l1", "net=espcn", "data.hr_crop=32", "data.batch_size=2", "data.repeat=1",
                 "data.val_max_size=48", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "test_after_fit=false", "compile=true"]
    results, run_dir = train_run(overrides)
    assert results["status"] == "finished" and results["global_step"] == 2
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("net.") for k in state) and not any("_orig_mod" in k for k in state)


def test_compile_networks_compiles_in_place():
    from featlab.train import build_task

    cfg = compose(["experiment=sisr_l1", "net=espcn", "compile=true"])
    plain = build_task(compose(["experiment=sisr_l1", "net=espcn"]), {})
    compiled = build_task(cfg, {})
    assert compiled.net._compiled_call_impl is not None and plain.net._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())

"""DINO task mechanics on a tiny ViT: teacher without gradients, EMA, schedules, clipping, freezing, export."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from featlab.backbones import create
from featlab.errors import ConfigError
from featlab.nets.dino_model import clip_grad_per_parameter_, ema_update_
from featlab.tasks.dino import DINOTask, SchedulePosition

NET = {"_target_": "featlab.nets.dino_model.DINOModel.from_config", "backbone": "vit_tiny_test", "pretrained": False,
       "out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8, "drop_path_rate": 0.1}
LOSS = {"_target_": "featlab.losses.dino.DINOLoss"}
CROPS = {"global_crops_size": 32, "local_crops_size": 16, "local_crops_number": 2}
OPTIM = {"name": "adamw", "lr": 5e-4, "weight_decay": 0.04}
SCHEDULER = {"kind": "warmup_cosine", "warmup_epochs": 2, "min_factor": 0.01}


def tiny_task(net=None, multicrop=None, loss=None, **kwargs) -> DINOTask:
    torch.manual_seed(0)
    return DINOTask(net={**NET, **(net or {})}, loss={**LOSS, **(loss or {})}, multicrop={**CROPS, **(multicrop or {})},
                    optim=OPTIM, scheduler=SCHEDULER, **kwargs)


def fake_trainer(**kw) -> SimpleNamespace:
    base = {"estimated_stepping_batches": 100, "num_training_batches": 10, "accumulate_grad_batches": 1,
            "max_epochs": 10, "world_size": 2, "global_step": 0, "current_epoch": 0, "fast_dev_run": False,
            "precision": "32-true", "datamodule": SimpleNamespace(batch_size=64)}
    return SimpleNamespace(**{**base, **kw})


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.fixture(scope="module")
def task() -> DINOTask:
    return tiny_task()


def test_teacher_starts_as_the_student_and_never_gets_gradients(task):
    fresh = tiny_task()
    assert all(torch.equal(t, s) for t, s in zip(params(fresh.teacher), params(fresh.student)))
    assert not any(p.requires_grad for p in fresh.teacher.parameters())
    loss, _ = fresh.dino_step(fresh.crops_of(fresh.synthetic_batch(2, torch.device("cpu"))))
    loss.backward()
    assert all(p.grad is None for p in fresh.teacher.parameters())
    assert all(p.grad is not None for p in fresh.student.backbone.parameters() if p.requires_grad)
    assert {n for n, _ in fresh.optimizer_parameters()} <= {n for n, _ in fresh.named_parameters() if n.startswith("student.")}


def test_bench_step_updates_the_teacher_as_an_ema_of_the_updated_student():
    task = tiny_task()
    optimizer = torch.optim.AdamW(task.student.parameters(), lr=1e-2)
    teacher_before = params(task.teacher)
    task.bench_step(task.synthetic_batch(2, torch.device("cpu")), optimizer, step=0)
    m = 0.996  # cosine schedule at step 0
    for t_old, t_new, s_new in zip(teacher_before, task.teacher.parameters(), task.student.parameters()):
        assert torch.allclose(t_new, m * t_old + (1 - m) * s_new.detach(), atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(teacher_before, params(task.teacher)))


def test_ema_update_formula():
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = [0.9 * t + 0.1 * s for t, s in zip(params(teacher), params(student))]
    ema_update_(teacher, student, 0.9)
    assert all(torch.allclose(p, e) for p, e in zip(teacher.parameters(), expected))


def test_gradients_are_clipped_per_parameter():
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.full((4,), 5.0), torch.tensor([0.6, 0.8])   # norms 10 and 1
    clip_grad_per_parameter_([a, b], 3.0)
    assert a.grad.norm().item() == pytest.approx(3.0, rel=1e-5) and b.grad.norm().item() == pytest.approx(1.0)


def test_schedules_at_their_endpoints(task):
    for step, momentum, wd in ((0, 0.996, 0.04), (100, 1.0, 0.4)):
        position = SchedulePosition(step, 100, 10.0)
        assert task.teacher_momentum(position) == pytest.approx(momentum)
        assert task.weight_decay_now(position) == pytest.approx(wd)
    assert task.teacher_momentum(SchedulePosition(50, 100, 10.0)) == pytest.approx((0.996 + 1.0) / 2)


def test_lr_is_scaled_by_global_batch_and_warms_up_then_decays():
    task = tiny_task()
    task._trainer = fake_trainer()
    configured = (dict(task.optim_cfg), dict(task.scheduler_cfg))
    conf = task.configure_optimizers()
    assert (task.optim_cfg, task.scheduler_cfg) == configured  # the config is read, never rewritten
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    peak = 5e-4 * 64 * 2 / 256
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([peak] * len(optimizer.param_groups))
    factor = scheduler.lr_lambdas[0]
    assert factor(0) == 0.0 and factor(20) == pytest.approx(1.0) and factor(100) == pytest.approx(0.01)
    # weight decay follows its own cosine on the decayed group only; biases and norms stay at 0
    task.apply_weight_decay(optimizer, SchedulePosition(100, 100, 10.0))
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == pytest.approx([0.0, 0.4])
    no_decay = next(g for g in optimizer.param_groups if not g["apply_wd"])
    assert all(p.ndim <= 1 for p in no_decay["params"])


def test_lr_scaling_and_epochs_count_accumulation_and_max_steps():
    """Images per optimiser step include accumulation; an epoch is its batches / accumulation,
    also when max_steps stops the fit early (total 30 steps of 5-step epochs)."""
    task = tiny_task()
    task._trainer = fake_trainer(accumulate_grad_batches=2, estimated_stepping_batches=30)
    conf = task.configure_optimizers()
    assert conf["optimizer"].param_groups[0]["initial_lr"] == pytest.approx(5e-4 * 64 * 2 * 2 / 256)
    factor = conf["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert factor(5) == pytest.approx(0.5) and factor(10) == pytest.approx(1.0)  # warmup 2 epochs = 10 steps
    assert task.schedule_position() == (0, 30, 5.0)


def test_fp16_loss_scaling_disables_the_fused_optimiser(monkeypatch):
    """Lightning unscales before clipping only for non-fused optimisers; fp16 must not get a fused one."""
    seen = {}

    def spy(params, **kwargs):
        seen.update(kwargs)
        return torch.optim.AdamW([p for _, p in params], lr=kwargs["lr"])

    monkeypatch.setattr("featlab.tasks.base.build_optimizer", spy)
    task = tiny_task()
    task._trainer = fake_trainer(precision="16-mixed")
    task.configure_optimizers()
    assert seen["fused"] is False
    seen.clear()
    task._trainer = fake_trainer(precision="bf16-mixed")
    task.configure_optimizers()
    assert "fused" not in seen


def test_optimizer_step_sets_weight_decay_then_steps_then_updates_the_teacher():
    task = tiny_task(net={"drop_path_rate": 0.0})
    task._trainer = fake_trainer(global_step=50)
    optimizer = task.configure_optimizers()["optimizer"]
    for p in task.student.parameters():
        p.grad = torch.full_like(p, 0.1)
    teacher_before = params(task.teacher)
    task.optimizer_step(0, 0, optimizer, None)
    momentum = task.teacher_momentum()
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == pytest.approx([0.0, task.weight_decay_now()])
    for t_before, t_after, s_after in zip(teacher_before, task.teacher.parameters(), task.student.parameters()):
        torch.testing.assert_close(t_after, momentum * t_before + (1 - momentum) * s_after.detach())


def test_gradient_clipping_hook_clips_each_parameter():
    task = tiny_task(clip_grad=0.5)
    for p in task.student.parameters():
        p.grad = torch.full_like(p, 10.0)
    task.configure_gradient_clipping(None)
    assert all(p.grad.norm() <= 0.5 + 1e-4 for p in task.student.parameters())


@pytest.mark.parametrize(("world", "synced"), [(1, False), (2, True)])
def test_batchnorm_is_synchronised_across_devices_only_under_ddp(world, synced):
    task = tiny_task(net={"backbone": "resnet_tiny_test", "use_bn": True, "drop_path_rate": 0.0})
    names = [n for n, _ in task.student.named_parameters()]
    task._trainer = fake_trainer(world_size=world)
    task.configure_model()
    for model in (task.student, task.teacher):
        kinds = {type(m) for m in model.modules()}
        assert (nn.SyncBatchNorm in kinds) == synced
        assert (nn.BatchNorm2d in kinds) != synced and (nn.BatchNorm1d in kinds) != synced
    assert [n for n, _ in task.student.named_parameters()] == names  # EMA pairing and export unchanged


def test_last_layer_is_frozen_only_during_the_first_epochs():
    task = tiny_task(freeze_last_layer=1)
    for epoch, frozen in ((0, True), (1, False)):
        task._trainer = fake_trainer(current_epoch=epoch)
        task.student.zero_grad(set_to_none=True)
        loss, _ = task.dino_step(task.synthetic_batch(2, torch.device("cpu"))["crops"])
        loss.backward()
        task.on_after_backward()
        assert (task.student.head.weight_v.grad is None) == frozen
        assert task.student.head.mlp[0].weight.grad is not None


def test_student_fits_fixed_teacher_targets_on_a_tiny_overfit():
    """Teacher and centre held fixed (momenta 1): the targets are constant, so the loss must fall."""
    task = tiny_task(net={"drop_path_rate": 0.0}, loss={"center_momentum": 1.0}, momentum_teacher=1.0)
    optimizer = torch.optim.AdamW([p for p in task.student.parameters() if p.requires_grad], lr=3e-3)
    batch = task.synthetic_batch(4, torch.device("cpu"))
    losses = [task.bench_step(batch, optimizer, step).item() for step in range(15)]
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_exported_teacher_backbone_loads_through_the_backbone_layer(task, tmp_path):
    path = task.export_teacher_backbone(tmp_path / "teacher.pt")
    x = torch.rand(2, 3, 64, 64)
    task.teacher.eval()
    with torch.no_grad():
        expected = task.teacher.backbone.global_features(x)
        for name in ("vit_tiny_test", "checkpoint"):
            fx = create(name, layers=["last", "cls"], pretrained=False, checkpoint=str(path))
            assert torch.allclose(fx.global_features(x), expected, atol=1e-5)
            assert fx(x)["last"].shape == (2, 32, 4, 4)


def test_bench_inputs_and_image_counts(task):
    cpu = torch.device("cpu")
    crops = task.synthetic_batch(3, cpu)["crops"]
    assert [c.shape[-1] for c in crops] == [32, 32, 16, 16] and task.images_in_batch({"crops": crops}) == 3
    images_task = tiny_task(bench_input="images")
    batch = images_task.synthetic_batch(3, cpu)
    assert batch["images"].dtype == torch.uint8 and images_task.images_in_batch(batch) == 3
    assert [c.shape[-1] for c in images_task.crops_of(batch)] == [32, 32, 16, 16]


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"multicrop": {"local_crops_size": 24}}, "data.multicrop.local_crops_size"),   # not a multiple of patch 16
    ({"loss": {"out_dim": 64}}, "loss.out_dim"),
    ({"net": {"backbone": "resnet7"}}, "net.backbone"),
    ({"bench_input": "video"}, "task.bench_input"),
])
def test_bad_input_names_its_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        tiny_task(**kwargs)

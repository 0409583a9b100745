import math

import pytest
import torch
from torch import nn

from featlab.errors import ConfigError
from featlab.optim import (
    build_lr_lambda,
    build_optimizer,
    cosine_value,
    decay_groups,
    fused_kwargs,
    instantiate_optimizer,
    instantiate_scheduler,
    step_scheduler,
    warmup_cosine_value,
)


def test_cosine_endpoints_and_midpoint():
    assert cosine_value(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_value(100, 100, 0.996, 1.0) == 1.0
    assert cosine_value(50, 100, 0.04, 0.4) == pytest.approx(0.22)


def test_warmup_cosine_is_linear_then_cosine():
    assert warmup_cosine_value(0, 10, 110, 1.0, 0.0) == 0.0
    assert warmup_cosine_value(5, 10, 110, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine_value(10, 10, 110, 1.0, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_value(60, 10, 110, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine_value(110, 10, 110, 1.0, 0.0) == 0.0


def test_lr_lambda_kinds():
    cos = build_lr_lambda("cosine", 100, min_factor=0.1)
    assert cos(0) == 1.0 and cos(100) == pytest.approx(0.1)
    warm = build_lr_lambda("warmup_cosine", 100, warmup_steps=10)
    assert warm(0) == 0.0 and warm(10) == pytest.approx(1.0)
    step = build_lr_lambda("step", 100, milestones=[50], gamma=0.5)
    assert step(49) == 1.0 and step(50) == 0.5
    with pytest.raises(ConfigError, match="task.scheduler.kind.*cosine"):
        build_lr_lambda("linear-ish", 10)
    with pytest.raises(ConfigError, match="warmup"):
        build_lr_lambda("warmup_cosine", 10, warmup_steps=20)


def test_no_weight_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = decay_groups(model.named_parameters(), 0.05)
    decay, no_decay = groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
    assert decay["apply_wd"] and not no_decay["apply_wd"]


def test_build_optimizer_skips_frozen_and_validates():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2
    with pytest.raises(ConfigError, match="task.optim.name"):
        build_optimizer(model, "lion", lr=1e-3)
    with pytest.raises(ConfigError, match="no trainable"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), lr=1e-3)
    assert math.isclose(opt.param_groups[0]["lr"], 1e-3)


# --- _target_ configs: torch.optim / timm.optim / timm.scheduler beside the presets ---------------------------
def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1))


def _step(opt: torch.optim.Optimizer, model: nn.Module) -> None:
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def test_a_partial_torch_optimizer_builds_groups_and_steps():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01,
           "name": "adamw"}  # the task preset's short name, replaced by _target_
    opt = instantiate_optimizer(model, cfg)
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # biases and norms: no decay
    assert not opt.defaults["fused"]  # CPU
    _step(opt, model)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_timm_optimizers_build():
    lion = instantiate_optimizer(_model(), {"_target_": "timm.optim.Lion", "lr": 1e-4, "betas": [0.9, 0.99]})
    assert type(lion).__name__ == "Lion" and tuple(lion.defaults["betas"]) == (0.9, 0.99)
    made = instantiate_optimizer(_model(), {"_target_": "timm.optim.create_optimizer_v2", "_partial_": True,
                                            "opt": "lamb", "lr": 1e-3, "weight_decay": 0.05})
    assert type(made).__name__ == "Lamb" and [g["weight_decay"] for g in made.param_groups] == [0.05, 0.0]


def test_fused_where_the_presets_fuse():
    assert fused_kwargs(torch.optim.AdamW, {}, on_cuda=True, fused=None) == {"fused": True}
    assert fused_kwargs(torch.optim.AdamW, {}, on_cuda=True, fused=False) == {}  # fp16 loss scaling
    assert fused_kwargs(torch.optim.AdamW, {"foreach": True}, on_cuda=True, fused=None) == {}
    assert fused_kwargs(torch.optim.AdamW, {}, on_cuda=False, fused=None) == {}
    from timm.optim import Lion
    assert fused_kwargs(Lion, {}, on_cuda=True, fused=None) == {}


@pytest.mark.parametrize(("cfg", "match"), [
    ({"_target_": "torch.optim.SGDX", "lr": 0.1}, r"^task.optim._target_: cannot import 'torch.optim.SGDX'"),
    ({"_target_": "torch.optim.SGD", "lr": 0.1, "betas": [0.9, 0.99]}, r"^task.optim.betas: torch.optim.SGD takes no"),
    ({"_target_": "torch.optim.SGD", "lr": -1.0}, r"^task.optim: SGD: Invalid learning rate"),
    ({"_target_": "torch.nn.Linear", "in_features": 2}, r"^task.optim"),
])
def test_bad_target_configs_are_one_line(cfg, match):
    with pytest.raises(ConfigError, match=match) as err:
        instantiate_optimizer(_model(), cfg)
    assert "\n" not in str(err.value)


def test_a_timm_scheduler_gets_the_fit_length_and_steps_per_update():
    model = _model()
    opt = instantiate_optimizer(model, {"_target_": "torch.optim.AdamW", "lr": 1.0})
    cfg = {"_target_": "timm.scheduler.CosineLRScheduler", "_partial_": True, "warmup_t": 2, "lr_min": 0.0,
           "kind": "cosine"}  # the preset's kind, replaced by _target_
    conf = instantiate_scheduler(opt, cfg, lambda: (10, 5))
    scheduler = conf["scheduler"]
    assert conf["interval"] == "step" and scheduler.t_initial == 10 and not scheduler.t_in_epochs
    lrs = []
    for step in range(1, 11):
        _step(opt, model)
        step_scheduler(scheduler, epoch=0, global_step=step)
        lrs.append(opt.param_groups[0]["lr"])
    # timm's convention: linear warmup over t < warmup_t, then cosine on t itself over t_initial updates
    assert lrs[0] == pytest.approx(0.5) and lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 10)))
    assert lrs[-1] == pytest.approx(0.0)
    by_epoch = instantiate_scheduler(opt, {"_target_": "timm.scheduler.StepLRScheduler", "decay_t": 1,
                                           "interval": "epoch"}, lambda: (10, 5))
    assert by_epoch["interval"] == "epoch" and by_epoch["scheduler"].t_in_epochs


def test_torch_schedulers_and_their_errors():
    opt = instantiate_optimizer(_model(), {"_target_": "torch.optim.SGD", "lr": 1.0})
    conf = instantiate_scheduler(opt, {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"}, lambda: (8, 4))
    assert conf["scheduler"].T_max == 8
    plateau = instantiate_scheduler(opt, {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "max",
                                          "interval": "epoch", "monitor": "val/psnr"}, lambda: 1 / 0)
    assert plateau["monitor"] == "val/psnr" and plateau["interval"] == "epoch"  # no length asked for
    step_scheduler(plateau["scheduler"], epoch=0, global_step=4, metric=1.0)
    with pytest.raises(ConfigError, match=r"^task.scheduler.min_factor: .*CosineAnnealingLR takes no 'min_factor'"):
        instantiate_scheduler(opt, {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "min_factor": 0.1},
                              lambda: (8, 4))
    with pytest.raises(ConfigError, match=r"^task.scheduler.interval: unknown interval 'batch'"):
        instantiate_scheduler(opt, {"_target_": "torch.optim.lr_scheduler.StepLR", "interval": "batch"},
                              lambda: (8, 4))

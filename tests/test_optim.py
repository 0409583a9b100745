import math

import pytest
import torch
from torch import nn

from featlab.errors import ConfigError
from featlab.optim import build_lr_lambda, build_optimizer, cosine_value, decay_groups, warmup_cosine_value


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

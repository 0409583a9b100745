"""DINO loss against a direct evaluation of its formula, centre EMA, temperature schedule, diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from featlab.errors import ConfigError
from featlab.losses.dino import DINOLoss, collapse_flag, teacher_temperature


def direct_loss(student, teacher, center, ncrops, student_temp, teacher_temp):
    """The paper's double loop: every teacher global view against every other student view."""
    s_chunks = (student / student_temp).chunk(ncrops)
    t_chunks = F.softmax((teacher - center) / teacher_temp, dim=-1).chunk(2)
    total, pairs = 0.0, 0
    for iq, q in enumerate(t_chunks):
        for v in range(ncrops):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(s_chunks[v], dim=-1), dim=-1).mean()
            pairs += 1
    return total / pairs


def test_loss_equals_the_formula_and_the_centre_moves_by_ema():
    torch.manual_seed(0)
    batch, out_dim, ncrops = 3, 11, 5
    loss_fn = DINOLoss(out_dim, ncrops, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9)
    center0 = torch.randn(1, out_dim)
    loss_fn.center.copy_(center0)
    student, teacher = torch.randn(ncrops * batch, out_dim), torch.randn(2 * batch, out_dim)
    loss, stats = loss_fn(student, teacher)
    assert torch.allclose(loss, direct_loss(student, teacher, center0, ncrops, 0.1, 0.04), atol=1e-5)
    assert torch.allclose(loss_fn.center, 0.9 * center0 + 0.1 * teacher.mean(0, keepdim=True), atol=1e-6)

    # diagnostics: mean teacher entropy and KL(student || teacher) over the same pairs, by hand
    log_q = F.log_softmax((teacher - center0) / 0.04, dim=-1)
    assert torch.allclose(stats["teacher_entropy"], -(log_q.exp() * log_q).sum(-1).mean(), atol=1e-5)
    log_p = F.log_softmax(student / 0.1, dim=-1).chunk(ncrops)
    kls = [(log_p[v].exp() * (log_p[v] - log_q.chunk(2)[iq])).sum(-1).mean()
           for iq in range(2) for v in range(ncrops) if v != iq]
    assert torch.allclose(stats["kl_student_teacher"], torch.stack(kls).mean(), atol=1e-4)
    assert math.isclose(stats["teacher_entropy_ratio"].item(), stats["teacher_entropy"].item() / math.log(out_dim),
                        rel_tol=1e-6)


def test_gradient_reaches_the_student_only():
    loss_fn = DINOLoss(6, 4)
    student = torch.randn(8, 6, requires_grad=True)
    teacher = torch.randn(4, 6, requires_grad=True)
    loss_fn(student, teacher)[0].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def official_schedule(warmup_temp, final_temp, warmup_epochs, epochs):
    """facebookresearch/dino, DINOLoss.__init__: linspace over the warmup epochs, then constant."""
    return np.concatenate((np.linspace(warmup_temp, final_temp, warmup_epochs),
                           np.ones(epochs - warmup_epochs) * final_temp))


@pytest.mark.parametrize("warmup_epochs", [0, 1, 2, 5, 30])
def test_teacher_temperature_follows_the_official_per_epoch_schedule(warmup_epochs):
    schedule = official_schedule(0.04, 0.07, warmup_epochs, 40)
    for epoch, expected in enumerate(schedule):
        for within in (0.0, 0.5, 0.999):  # constant within an epoch
            assert teacher_temperature(epoch + within, 0.04, 0.07, warmup_epochs) == pytest.approx(expected, abs=1e-12)
    if warmup_epochs > 1:  # the final value is reached at epoch warmup_epochs - 1, not warmup_epochs
        assert teacher_temperature(warmup_epochs - 1, 0.04, 0.07, warmup_epochs) == pytest.approx(0.07)
    assert DINOLoss(4, 3, warmup_teacher_temp=0.02, teacher_temp=0.06, warmup_teacher_temp_epochs=0).teacher_temp(0) == 0.06


def test_fractional_warmup_epochs_are_a_config_error():
    with pytest.raises(ConfigError, match="warmup_teacher_temp_epochs"):
        DINOLoss(4, 3, warmup_teacher_temp_epochs=2.5)


def test_collapse_flag_marks_both_kinds_of_collapse():
    flags = collapse_flag(torch.tensor([0.01, 0.5, 0.99]))
    assert flags.tolist() == [1.0, 0.0, 1.0]


def test_bad_settings_name_their_key():
    with pytest.raises(ConfigError, match="loss.teacher_temp"):
        DINOLoss(4, 4, teacher_temp=0.0)
    with pytest.raises(ConfigError, match="data.multicrop"):
        DINOLoss(4, 1)
    with pytest.raises(ConfigError, match="data.multicrop"):
        DINOLoss(4, 4)(torch.randn(6, 4), torch.randn(4, 4))   # 6 student rows is not 4 crops x 2 images

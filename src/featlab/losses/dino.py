"""The DINO self-distillation loss: student crops predict the centred, sharpened teacher globals.

Centring (subtracting an EMA of the teacher's mean output) stops one prototype from dominating,
sharpening (a low teacher temperature) stops the uniform solution; together they avoid collapse
without negatives. The centre must be the mean over the *global* batch, so under DDP the batch
sum is all-reduced before the EMA; otherwise every rank drifts to its own centre.
"""

from __future__ import annotations

import math

import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from featlab.errors import require


def teacher_temperature(progress_epochs: float, warmup_temp: float, final_temp: float, warmup_epochs: int) -> float:
    """The official DINO schedule: ``np.linspace(warmup_temp, final_temp, warmup_epochs)[epoch]``,
    then ``final_temp``; constant within an epoch.

    ``progress_epochs`` may be fractional (step / steps per epoch); the epoch is its integer part.
    As in ``facebookresearch/dino``, the warmup's last epoch (``warmup_epochs - 1``) already uses
    ``final_temp``, and a one-epoch warmup means one epoch at ``warmup_temp``. A high teacher
    temperature early on would make the targets near uniform before the student has learnt
    anything, which is the uniform-collapse regime; warming up from a sharp value is safer.
    """
    epoch = int(math.floor(progress_epochs))
    warmup_epochs = int(warmup_epochs)
    if epoch >= warmup_epochs:
        return final_temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (final_temp - warmup_temp) * epoch / (warmup_epochs - 1)


def all_reduce_sum(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum ``tensor`` over all processes (in place) and return it with the world size (1 without DDP)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor, dist.get_world_size()
    return tensor, 1


class DINOLoss(nn.Module):
    """Cross-entropy between teacher and student prototype distributions over pairs of different views.

    ``student_out`` holds ``ncrops`` chunks of equal batch size, the two global crops first, in the
    same order as ``teacher_out``'s two chunks; pairs where student and teacher saw the same crop are
    skipped (predicting yourself is trivial).
    """

    def __init__(
        self,
        out_dim: int,
        ncrops: int,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        n_global: int = 2,
    ) -> None:
        super().__init__()
        require(n_global >= 2 and ncrops >= n_global, "data.multicrop.local_crops_number",
                f"DINO needs {n_global} >= 2 global crops and ncrops >= that (got ncrops={ncrops})")
        for key, temp in (("warmup_teacher_temp", warmup_teacher_temp), ("teacher_temp", teacher_temp),
                          ("student_temp", student_temp)):
            require(temp > 0, f"loss.{key}", f"a softmax temperature must be positive, got {temp}")
        require(float(warmup_teacher_temp_epochs).is_integer() and warmup_teacher_temp_epochs >= 0,
                "loss.warmup_teacher_temp_epochs",
                f"the official schedule counts whole epochs; got {warmup_teacher_temp_epochs}")
        # 1.0 keeps the centre at zero: the "no centring" ablation of the paper
        require(0.0 <= center_momentum <= 1.0, "loss.center_momentum", f"must be in [0, 1], got {center_momentum}")
        self.out_dim = out_dim
        self.ncrops = ncrops
        self.n_global = n_global
        self.student_temp = student_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.final_teacher_temp = teacher_temp
        self.warmup_teacher_temp_epochs = int(warmup_teacher_temp_epochs)
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @property
    def num_pairs(self) -> int:
        return self.n_global * (self.ncrops - 1)

    def teacher_temp(self, progress_epochs: float) -> float:
        return teacher_temperature(progress_epochs, self.warmup_teacher_temp, self.final_teacher_temp,
                                   self.warmup_teacher_temp_epochs)

    def teacher_log_probs(self, teacher_out: torch.Tensor, temp: float) -> torch.Tensor:
        """Log of the centred, sharpened teacher targets (no gradient: the teacher is only a target)."""
        return F.log_softmax((teacher_out.detach().float() - self.center) / temp, dim=-1)

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, progress_epochs: float = 0.0,
        update_center: bool = True,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and detached diagnostics (teacher entropy, KL(student || teacher), temperature).

        Summing over pairs uses ``sum_{v != q} log p_v = (sum_v log p_v) - log p_q`` so each view's
        log-softmax is computed once, not once per pair; the result equals the pairwise loop.
        """
        batch = teacher_out.shape[0] // self.n_global
        require(student_out.shape[0] == batch * self.ncrops, "data.multicrop",
                f"the student got {student_out.shape[0]} rows, expected {self.ncrops} crops x {batch} images")
        temp = self.teacher_temp(progress_epochs)
        log_t = self.teacher_log_probs(teacher_out, temp).view(self.n_global, batch, -1)
        targets = log_t.exp()
        log_p = F.log_softmax(student_out.float() / self.student_temp, dim=-1).view(self.ncrops, batch, -1)
        log_p_others = log_p.sum(0, keepdim=True) - log_p[: self.n_global]   # (n_global, B, K)
        loss = -(targets * log_p_others).sum(-1).mean(-1).sum() / self.num_pairs
        stats = self.diagnostics(log_p.detach(), log_t)
        stats["teacher_temp"] = torch.full((), temp, device=loss.device)  # a fill, not a host copy
        if update_center:
            self.update_center(teacher_out)
        return loss, stats

    @torch.no_grad()
    def diagnostics(self, log_p: torch.Tensor, log_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean teacher entropy and mean KL(student || teacher) over the loss's pairs.

        Both go to ~0 at collapse (one-hot or uniform teacher matched by the student), and the
        entropy tells which collapse: ~0 means one prototype wins, ~log(K) means uniform.
        """
        entropy = -(log_t.exp() * log_t).sum(-1).mean()
        p = log_p.exp()
        neg_entropy_s = (p * log_p).sum(-1)                                  # (ncrops, B)
        others_neg_entropy = neg_entropy_s.sum(0) - neg_entropy_s[: self.n_global]   # (n_global, B)
        others_p = p.sum(0, keepdim=True) - p[: self.n_global]              # (n_global, B, K)
        kl = (others_neg_entropy - (others_p * log_t).sum(-1)).mean(-1).sum() / self.num_pairs
        ratio = entropy / math.log(self.out_dim)
        return {"teacher_entropy": entropy, "teacher_entropy_ratio": ratio, "kl_student_teacher": kl}

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA of the teacher's mean output over the global batch (all ranks)."""
        batch_sum = teacher_out.detach().float().sum(0, keepdim=True)
        batch_sum, world = all_reduce_sum(batch_sum)
        batch_center = batch_sum / (teacher_out.shape[0] * world)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)


def collapse_flag(entropy_ratio: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """1.0 when the teacher entropy sits within ``margin`` of 0 or of log(K) (relative), else 0.0."""
    return ((entropy_ratio < margin) | (entropy_ratio > 1.0 - margin)).float()

"""Optimisers and schedules shared by every task.

DINO, SISR and DSR all use AdamW with warmup + cosine; keeping one implementation means one place
where 'no weight decay on biases and norms' and 'fused kernels on GPU' are decided.

``task.optim`` / ``task.scheduler`` are either today's short names (``name: adamw``, ``kind: cosine``:
the presets) or a ``_target_`` config (``torch.optim.SGD``, ``timm.optim.Lion``,
``timm.optim.create_optimizer_v2``, ``torch.optim.lr_scheduler.OneCycleLR``,
``timm.scheduler.CosineLRScheduler``...), called with what only the fit knows: the parameter groups
(decay / no decay, as for the presets), the optimiser, and the schedule length where the target takes
one and the config leaves it out. ``_target_`` replaces the short name, so ``name``/``kind`` left over
from the task's preset are ignored; any other key the target does not take is an error naming it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from featlab.errors import ConfigError, require, unknown_name

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def cosine_value(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step >= total)."""
    if total <= 0 or step >= total:
        return end
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / total))


def warmup_cosine_value(step: int, warmup: int, total: int, peak: float, final: float, start: float = 0.0) -> float:
    """Linear warmup ``start -> peak`` over ``warmup`` steps, then cosine ``peak -> final`` until ``total``."""
    if step < warmup:
        return start + (peak - start) * step / max(1, warmup)
    return cosine_value(step - warmup, total - warmup, peak, final)


def decay_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two parameter groups: weights with decay, and biases / norm scales (ndim <= 1) without.

    Decaying norm gains and biases only shrinks them towards zero, which hurts ViTs; DINO and most
    SR recipes exclude them. Each group carries ``apply_wd`` so per-step weight-decay schedules
    know which group to touch.
    """
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "apply_wd": True}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "apply_wd": False})
    return [g for g in groups if g["params"]]


def _number(value, key: str) -> float:
    """``value`` as a float, or one line naming ``key`` (``task.optim.lr=abc`` arrives as a string)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number, got {value!r}") from None


def build_optimizer(
    module: nn.Module | Iterable[tuple[str, nn.Parameter]],
    name: str = "adamw",
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    momentum: float = 0.9,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """Build an optimiser over the trainable parameters, fused on CUDA unless ``fused=False``."""
    lr, weight_decay, momentum = (_number(v, f"task.optim.{k}") for k, v in
                                  (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum)))
    require(lr > 0, "task.optim.lr", f"must be positive, got {lr}")
    named = module.named_parameters() if isinstance(module, nn.Module) else module
    groups = decay_groups(named, weight_decay)
    require(bool(groups), "task.optim", "the model has no trainable parameters")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    use_fused = on_cuda if fused is None else (fused and on_cuda)
    name = name.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=use_fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), fused=use_fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=use_fused)
    raise unknown_name("task.optim.name", name, OPTIMIZERS, "optimizer")


def build_lr_lambda(
    kind: str, total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0,
    milestones: Iterable[int] = (), gamma: float = 0.5,
):
    """A per-step multiplier of the base learning rate for ``torch.optim.lr_scheduler.LambdaLR``."""
    kind = kind.lower()
    if kind not in SCHEDULES:
        raise unknown_name("task.scheduler.kind", kind, SCHEDULES, "schedule")
    require(warmup_steps < max(total_steps, 1) or kind == "constant", "task.scheduler.warmup",
            f"warmup ({warmup_steps} steps) must be shorter than training ({total_steps} steps)")
    marks = sorted(milestones)

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        if kind == "step":
            return gamma ** sum(step >= m for m in marks)
        warm = warmup_steps if kind == "warmup_cosine" else 0
        return warmup_cosine_value(step, warm, total_steps, 1.0, min_factor, start=0.0 if warm else 1.0)

    return factor


#: Schedule-length arguments filled from the fit when a ``_target_`` scheduler takes them and the
#: config leaves them out: ``total`` is in the scheduler's interval (steps, or epochs).
LENGTH_ARGS = {"t_initial": "total", "T_max": "total", "total_steps": "total", "num_epochs": "epochs",
               "updates_per_epoch": "per_epoch"}
INTERVALS = ("step", "epoch")


def _target(cfg: Mapping[str, Any], key: str) -> tuple[Callable, dict[str, Any]]:
    """The ``_target_`` callable and its keyword arguments, each checked against its signature."""
    from hydra.utils import get_object

    path = cfg["_target_"]
    try:
        target = get_object(str(path))
    except Exception as err:
        raise ConfigError(f"{key}._target_", f"cannot import '{path}' ({type(err).__name__}); "
                          "give a dotted path such as torch.optim.AdamW or timm.scheduler.CosineLRScheduler") from None
    require(callable(target), f"{key}._target_", f"'{path}' is not callable")
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
    params = _parameters(target)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for name in kwargs:
            if name not in params:
                raise ConfigError(f"{key}.{name}", f"{path} takes no '{name}' (remove it: ~{key}.{name}); "
                                  f"it takes {', '.join(list(params)[1:])}")
    return target, kwargs


def _parameters(target: Callable) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return {"kwargs": inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)}


def _call(target: Callable, first: Any, kwargs: dict[str, Any], key: str) -> Any:
    """``target(first, **kwargs)`` with nested ``_target_`` values built; a bad value names ``key``."""
    from hydra.utils import instantiate

    built = instantiate(kwargs, _convert_="all") if kwargs else {}
    try:
        return target(first, **built)
    except (TypeError, ValueError) as err:
        raise ConfigError(key, f"{getattr(target, '__name__', target)}: {err}") from None


def fused_kwargs(target: Callable, kwargs: Mapping[str, Any], on_cuda: bool, fused: bool | None) -> dict[str, bool]:
    """``{"fused": True}`` where the presets would fuse: on CUDA, for a target with a ``fused`` argument,
    unless the config chose ``fused``/``foreach`` itself or ``fused=False`` (fp16 loss scaling)."""
    if not on_cuda or fused is False or "fused" in kwargs or "foreach" in kwargs:
        return {}
    return {"fused": True} if "fused" in _parameters(target) else {}


def instantiate_optimizer(module: nn.Module | Iterable[tuple[str, nn.Parameter]], cfg: Mapping[str, Any],
                          key: str = "task.optim") -> torch.optim.Optimizer:
    """A ``_target_`` optimiser config called with featlab's decay / no-decay groups.

    ``weight_decay`` goes to the groups (biases and norms get none); ``fused`` is featlab's switch
    (None: fused on CUDA where the target has it), never passed on as given.
    """
    cfg = {k: v for k, v in cfg.items() if k not in ("name", "_partial_")}
    fused = cfg.pop("fused", None)
    weight_decay = _number(cfg.pop("weight_decay", 0.0), f"{key}.weight_decay")
    target, kwargs = _target(cfg, key)
    named = module.named_parameters() if isinstance(module, nn.Module) else module
    groups = decay_groups(named, weight_decay)
    require(bool(groups), key, "the model has no trainable parameters")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    kwargs.update(fused_kwargs(target, kwargs, on_cuda, fused))
    optimizer = _call(target, groups, kwargs, key)
    require(isinstance(optimizer, torch.optim.Optimizer), f"{key}._target_",
            f"{cfg['_target_']} did not return a torch optimiser")
    return optimizer


def instantiate_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any],
                          lengths: Callable[[], tuple[int, int]], key: str = "task.scheduler") -> dict[str, Any]:
    """A ``_target_`` scheduler config -> Lightning's ``lr_scheduler`` dict.

    featlab's own keys: ``interval`` (step | epoch, default step), ``frequency``, ``monitor`` (for
    ``ReduceLROnPlateau``). ``lengths()`` gives ``(total steps, steps per epoch)`` of the fit; it is
    asked only when a length argument (``LENGTH_ARGS``) is left out. A timm scheduler steps in the
    interval its ``t_in_epochs`` says (filled from ``interval`` when left out).
    """
    cfg = {k: v for k, v in cfg.items() if k not in ("kind", "_partial_")}
    interval = str(cfg.pop("interval", "step"))
    if interval not in INTERVALS:
        raise unknown_name(f"{key}.interval", interval, INTERVALS, "interval")
    frequency, monitor = int(cfg.pop("frequency", 1)), cfg.pop("monitor", None)
    target, kwargs = _target(cfg, key)
    params = _parameters(target)
    missing = [name for name in LENGTH_ARGS if name in params and name not in kwargs]
    if missing:
        total, per_epoch = lengths()
        epochs = math.ceil(total / per_epoch)
        known = {"total": total if interval == "step" else epochs, "epochs": epochs, "per_epoch": per_epoch}
        kwargs.update({name: known[LENGTH_ARGS[name]] for name in missing})
    for flag in ("t_in_epochs", "step_on_epochs"):
        if flag in params and flag not in kwargs:
            kwargs[flag] = interval == "epoch"
    scheduler = _call(target, optimizer, kwargs, key)
    if isinstance(scheduler, tuple):  # timm.scheduler.create_scheduler_v2 returns (scheduler, epochs)
        scheduler = scheduler[0]
    if hasattr(scheduler, "t_in_epochs"):
        interval = "epoch" if scheduler.t_in_epochs else "step"
    out = {"scheduler": scheduler, "interval": interval, "frequency": frequency}
    if monitor is not None:
        out["monitor"] = str(monitor)
    return out


def step_scheduler(scheduler: Any, epoch: int, global_step: int, metric: Any = None) -> None:
    """One scheduler update: timm's by count (``step_update`` per optimiser step, ``step(epoch + 1)``
    at an epoch's end, as timm's own training loop does), torch's as Lightning would."""
    if hasattr(scheduler, "step_update") and hasattr(scheduler, "t_in_epochs"):
        if scheduler.t_in_epochs:
            scheduler.step(epoch + 1, metric)
        else:
            scheduler.step_update(global_step, metric)
    elif metric is None:
        scheduler.step()
    else:
        scheduler.step(metric)


"""Truncate a module to the submodules a tap plan uses, so unused parts cost nothing.

Dropped children of ``nn.Sequential`` / ``nn.ModuleList`` containers are deleted when they form a
suffix (so ``len(model.blocks)`` shows the truncation and indices of kept children do not move);
any other dropped child is replaced by ``nn.Identity`` so attribute access keeps working. Either
way the dropped parameters are gone from the module and its state dict.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def prune_to(module: nn.Module, keep: Iterable[str], prefix: str = "") -> None:
    """Keep only the submodules named (dotted paths) in ``keep`` and the containers leading to them."""
    keep = set(keep)
    dropped: list[str] = []
    for name, child in list(module.named_children()):
        path = prefix + name
        if path in keep:
            continue
        if any(k.startswith(path + ".") for k in keep):
            prune_to(child, keep, path + ".")
            continue
        dropped.append(name)
    if not dropped:
        return
    names = [name for name, _ in module.named_children()]
    if isinstance(module, nn.Sequential | nn.ModuleList) and names[-len(dropped) :] == dropped:
        for _ in dropped:
            del module[len(module) - 1]
        return
    for name in dropped:
        setattr(module, name, nn.Identity())

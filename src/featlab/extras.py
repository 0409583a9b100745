"""``extras`` (lightning-hydra-template's): what a run does around training, not part of it.

``extras.print_config`` prints the composed config as a tree when a run starts, so a log shows what
actually ran after every default, experiment, budget and override was merged. ``extras.ignore_warnings``
silences the third-party warnings in :data:`KNOWN_WARNINGS`, each harmless in featlab for the
reason beside it, so that the warnings that remain are worth reading.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

#: (category, message regex, why it is harmless here).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (PossibleUserWarning, r"Found \d+ module\(s\) in eval mode",
     "frozen backbones (perceptual and identity losses, slot encoders) stay in eval mode on purpose"),
    (PossibleUserWarning, r"The number of training batches .* is smaller than the logging interval",
     "pipeline checks and debug runs have only a few batches"),
    (PossibleUserWarning, r"The '\w+' does not have many workers",
     "debug runs and the CPU check load in the main process on purpose (data.num_workers)"),
    (UserWarning, r"You requested to overfit but enabled \w+ dataloader shuffling",
     "debug=overfit: featlab's loaders order samples themselves and give the sequential order asked for"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "Lightning's own use of a torch API newer torch versions renamed"),
)

#: The order of the printed tree: what an experiment is made of first, where it runs after.
PRINT_ORDER = ("task", "data", "net", "loss", "trainer", "callbacks", "logger", "paths")


def config_tree(config: Mapping[str, Any], order: tuple[str, ...] = PRINT_ORDER):
    """A rich Tree of ``config``: one branch per top-level group (YAML), the plain keys last."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    groups = [k for k in order if k in config] + [k for k in config if k not in order and isinstance(config[k], Mapping)]
    for key in groups:
        text = OmegaConf.to_yaml(OmegaConf.create({key: config[key]})) if config[key] is not None else f"{key}: null\n"
        tree.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    rest = {k: v for k, v in config.items() if k not in groups}
    if rest:
        tree.add(Syntax(OmegaConf.to_yaml(OmegaConf.create(rest)).rstrip(), "yaml", theme="ansi_dark",
                        background_color="default"))
    return tree


def print_config_tree(config: Mapping[str, Any], file: TextIO | None = None) -> None:
    from rich.console import Console

    Console(file=file or sys.stdout, soft_wrap=True).print(config_tree(config))


@contextmanager
def run_extras(extras: Mapping[str, Any] | None, config: Mapping[str, Any]) -> Iterator[None]:
    """Print ``config`` (resolved, rank 0) if asked, and silence the known warnings until the run ends.

    The filters are scoped to the run (``warnings.catch_warnings``): a test or a notebook that
    trains twice gets its own warnings back afterwards.
    """
    extras = dict(extras or {})
    if extras.get("print_config") and rank_zero_only.rank == 0:
        print_config_tree(config)
    with warnings.catch_warnings():
        if extras.get("ignore_warnings"):
            for category, message, _why in KNOWN_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
        yield

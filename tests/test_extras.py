"""extras: the config tree printed at the start of a run, known warnings silenced for the run only."""

from __future__ import annotations

import io
import warnings

import pytest
from lightning.fabric.utilities.warnings import PossibleUserWarning

from featlab.config import compose, to_plain
from featlab.extras import KNOWN_WARNINGS, print_config_tree, run_extras

# As Lightning words them (2.6): each must be matched by one of KNOWN_WARNINGS.
REAL_MESSAGES = [
    (PossibleUserWarning, "Found 277 module(s) in eval mode at the start of training. This may lead to unexpected "
                          "behavior during training."),
    (PossibleUserWarning, "The number of training batches (2) is smaller than the logging interval "
                          "Trainer(log_every_n_steps=10). Set a lower value for log_every_n_steps if you want to see logs"),
    (PossibleUserWarning, "The 'train_dataloader' does not have many workers which may be a bottleneck."),
    (UserWarning, "You requested to overfit but enabled train dataloader shuffling. We are turning off the train "
                  "dataloader shuffling for you."),
    (FutureWarning, "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
                    "treespec.is_leaf()` instead."),
]


def emitted(messages) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run_extras({"ignore_warnings": True, "print_config": False}, {}):
            for category, text in messages:
                warnings.warn(text, category, stacklevel=1)
    return [str(w.message) for w in caught]


def test_known_warnings_are_silenced_and_others_kept():
    assert len(KNOWN_WARNINGS) == len(REAL_MESSAGES)
    assert emitted(REAL_MESSAGES) == []
    assert emitted([(UserWarning, "something new")]) == ["something new"]
    assert emitted([(PossibleUserWarning, "The 'val_dataloader' has a sampler that shuffles")]) != []


def test_the_filters_end_with_the_run():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run_extras({"ignore_warnings": True}, {}):
            pass
        warnings.warn(REAL_MESSAGES[0][1], PossibleUserWarning, stacklevel=1)
    assert len(caught) == 1


def test_without_ignore_warnings_they_stay():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run_extras({"ignore_warnings": False}, {}):
            warnings.warn(REAL_MESSAGES[0][1], PossibleUserWarning, stacklevel=1)
    assert len(caught) == 1


def test_the_tree_shows_the_resolved_config_groups_first():
    config = {k: v for k, v in to_plain(compose(["experiment=sisr_dino"])).items() if k != "hydra"}
    out = io.StringIO()
    print_config_tree(config, file=out)
    text = out.getvalue()
    assert "_target_: featlab.tasks.sisr" in text and "study: sisr_dino" in text
    assert text.index("task:") < text.index("data:") < text.index("trainer:") < text.index("study:")
    assert "${" not in text  # interpolations resolved: the values that ran


@pytest.mark.parametrize("print_config", [True, False])
def test_print_config_switch(capsys, print_config):
    with run_extras({"print_config": print_config}, {"task": {"lr": 0.5}, "seed": 3}):
        pass
    out = capsys.readouterr().out
    assert ("lr: 0.5" in out and "seed: 3" in out) == print_config
    assert out == "" or print_config

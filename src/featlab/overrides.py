"""Command lines of ``key=value`` overrides: which of them identify a run, and splitting and
merging them for the tools that are not ``@hydra.main`` apps."""

from __future__ import annotations

from collections.abc import Iterable

from featlab.errors import ConfigError

#: Overrides that change where or how a run is executed, not what it computes: left out of run
#: names and tags (featlab.train) and of job folder names (conf/hydra/default.yaml, through the
#: ``non_identifying_keys`` resolver). Prefixes: ``trainer`` covers ``trainer=gpu`` and ``trainer.max_epochs``;
#: ``debug`` (``debug=fdr``) only shortens or instruments a run, ``tags`` label it.
NON_IDENTIFYING_KEYS = ("hydra.", "paths.", "trainer", "logger", "ckpt_path", "callbacks.", "data.num_workers",
                        "debug", "tags")


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``: the key (or config group) an override sets, as Hydra names it."""
    return override.split("=", 1)[0].lstrip("+~")


def identifies_run(override: str) -> bool:
    return not override_key(override).startswith(NON_IDENTIFYING_KEYS)


def non_identifying_keys(overrides: Iterable[str]) -> list[str]:
    """The keys of ``overrides`` that do not identify a run (Hydra's ``override_dirname.exclude_keys``)."""
    return sorted({override_key(str(o)) for o in overrides if not identifies_run(str(o))})


def split_overrides(argv: list[str], own_keys: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Separate a tool's own ``key=value`` arguments from Hydra overrides for the training config."""
    own: dict[str, str] = {}
    rest: list[str] = []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(None, f"argument '{arg}' is not of the form key=value")
        key, value = arg.split("=", 1)
        if key in own_keys:
            own[key] = value
        else:
            rest.append(arg)
    return own, rest


def merge_overrides(stored: list[str], given: list[str]) -> list[str]:
    """Stored overrides of a run, with the ones given now winning for the same key."""
    given_keys = {override_key(o) for o in given}
    return [o for o in stored if override_key(o) not in given_keys] + list(given)

"""Command lines of ``key=value`` overrides for the tools that are not ``@hydra.main`` apps."""

from __future__ import annotations

from featlab.errors import ConfigError


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
    def key(o: str) -> str:
        return o.split("=", 1)[0].lstrip("+~")

    given_keys = {key(o) for o in given}
    return [o for o in stored if key(o) not in given_keys] + list(given)

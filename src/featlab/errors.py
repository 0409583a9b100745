"""One exception type for everything a user can fix by editing the config.

Entry points catch :class:`ConfigError` and print its one-line message instead of a traceback,
so a wrong layer name or a missing folder reads like advice, not like a crash inside torch.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A problem with the user's configuration or inputs; the message names the key to change."""

    def __init__(self, key: str | None, message: str) -> None:
        self.key = key
        text = f"{key}: {message}" if key else message
        super().__init__(" ".join(text.split("\n")))


def unknown_name(key: str, name: str, valid: Iterable[str], what: str = "name") -> ConfigError:
    """Error for a name that is not registered, listing the valid choices."""
    choices = ", ".join(sorted(valid))
    return ConfigError(key, f"unknown {what} '{name}'. Valid: {choices}")


def require(condition: bool, key: str | None, message: str) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(key, message)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the message names the term and what to try."""


USER_ERRORS = (ConfigError, NonFiniteLossError)


def user_error_in(err: BaseException, kinds: tuple[type[BaseException], ...] = USER_ERRORS) -> BaseException | None:
    """The user-facing error somewhere in ``err``'s cause/context chain, or None.

    Hydra's ``instantiate`` and Lightning's trainer wrap whatever a constructor or hook raised;
    the one line worth showing is the ConfigError (or NaN report) inside.
    """
    seen: BaseException | None = err
    visited = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None

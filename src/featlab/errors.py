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

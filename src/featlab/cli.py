"""Turning user mistakes into one line on stderr instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from featlab.callbacks.nan_guard import NonFiniteLossError
from featlab.errors import ConfigError

T = TypeVar("T")

USER_ERRORS = (ConfigError, NonFiniteLossError)


def user_error_in(err: BaseException) -> BaseException | None:
    """The user-facing error somewhere in ``err``'s cause/context chain (Hydra and Lightning wrap them)."""
    seen: BaseException | None = err
    visited = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, USER_ERRORS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def exit_on_user_error(fn: Callable[[], T]) -> T:
    """Run ``fn``; a ConfigError (however deeply wrapped) becomes ``featlab: error: ...`` and exit 2."""
    try:
        return fn()
    except Exception as err:
        user = user_error_in(err)
        if user is None:
            raise
        print(f"featlab: error: {user}", file=sys.stderr)
        raise SystemExit(2) from None

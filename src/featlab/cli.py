"""Turning user mistakes into one line on stderr instead of a traceback."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
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


HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def field_docs(schema: type) -> dict[str, str]:
    """The trailing ``# comment`` of each dataclass field line: the one-line doc of that key."""
    try:
        source = inspect.getsource(schema)
    except (OSError, TypeError):
        return {}
    pattern = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")
    return {m.group(1): m.group(2) for m in map(pattern.match, source.splitlines()) if m}


def key_help(schema: type, description: str = "") -> str:
    """``--help`` text for a ``key=value`` tool: every key with its default (``???`` = required) and doc."""
    from featlab.commands import program_name

    program = program_name(schema.__module__)
    docs = field_docs(schema)
    rows = []
    for f in fields(schema):
        default = f.default if f.default is not MISSING else "???"
        text = "null" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        rows.append((f"{f.name}={text}", docs.get(f.name, "")))
    width = max(len(key) for key, _ in rows)
    lines = [f"usage: {program} key=value ...", ""]
    if description:
        lines += [description.strip(), ""]
    lines.append("keys (default shown; ??? = required):")
    lines += [f"  {key:<{width}}  {doc}".rstrip() for key, doc in rows]
    return "\n".join(lines)

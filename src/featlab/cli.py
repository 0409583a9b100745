"""The command-line front door: user mistakes become one line on stderr and exit status 2.

``train.py``, ``eval.py`` and the tools run their work through :func:`exit_on_user_error`; tools
that take ``key=value`` arguments parse them into a dataclass with :func:`parse_key_values`, show
``--help`` from it (:func:`key_help`) and run through :func:`run_cli`. Finding the user's error
under Hydra's and Lightning's wrappers is :func:`featlab.errors.user_error_in`, which lower layers
use too.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from featlab.errors import ConfigError, user_error_in

T = TypeVar("T")

EXIT_USER_ERROR = 2


def exit_on_user_error(fn: Callable[[], T], prefix: str = "featlab: error: ") -> T:
    """Run ``fn``; a ConfigError (however deeply wrapped) becomes ``<prefix><message>`` and exit 2."""
    try:
        return fn()
    except Exception as err:
        user = user_error_in(err)
        if user is None:
            raise
        print(f"{prefix}{user}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


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


def parse_key_values(schema: type[T], argv: Sequence[str]) -> T:
    """Parse Hydra-style ``key=value`` arguments into the dataclass ``schema``.

    OmegaConf does the typing (ints, bools, null) and rejects unknown keys and missing
    mandatory (``???``) values; both come back as a ConfigError naming the key.
    """
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(
                None,
                f"arguments are key=value, got '{arg}'. Keys: {', '.join(f.name for f in fields(schema))}",
            )
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(argv)))
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(missing[0], "is required (pass it as key=value)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or None
        raise ConfigError(key, str(err).splitlines()[0]) from err


def run_cli(main: Callable[[T], object], schema: type[T], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``main``; a user error becomes ``error: ...`` on stderr and return code 2.

    ``--help`` prints the keys, their defaults and docs (the fields' trailing comments) instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        module = sys.modules[schema.__module__]
        print(key_help(schema, (module.__doc__ or "").split("\n\n")[0]))
        return 0
    try:
        exit_on_user_error(lambda: main(parse_key_values(schema, args)), prefix="error: ")
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0

"""User-facing errors: the CLI prints their one-line message and exits with their ``exit_code`` (2).

Messages quote user values through :func:`short`, so that a huge value never makes a huge line.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Iterable

__all__ = ["UserError", "ConfigError", "DatasetError", "NonFiniteError", "short", "one_line", "did_you_mean",
           "require"]

MAX_VALUE = 60          # characters of a quoted value
MAX_LINE = 400          # characters of a whole message


class UserError(Exception):
    """Bad input from the user (option, config, dataset path). Never a bug in bsnn."""

    exit_code = 2


class ConfigError(UserError):
    """A bad run configuration: unknown key, wrong type or value out of range."""


class DatasetError(UserError):
    """A dataset that cannot be found, read or used (missing root, broken file, bad content)."""


class NonFiniteError(UserError):
    """Training stopped on non-finite values (``docs/methods.md``, "Non-finite values")."""

    exit_code = 3


def short(value: Any, limit: int = MAX_VALUE) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "…" + text[-4:]


def one_line(message: str, limit: int = MAX_LINE) -> str:
    """A message as one line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or raise a one-line ``UserError`` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the optional package {module.split('.')[0]!r}: "
                        f"pip install 'bsnn[{extra}]'") from None

"""Errors the user is meant to read.

Every failure caused by input (a model reference, a file, a config) is raised as a
`TunedeckError` whose message names what is wrong and how to fix it. Front ends print the message
and never a traceback.
"""

from __future__ import annotations


class TunedeckError(Exception):
    """A problem the user can fix; `str(err)` is the whole message."""


class ModelNotFound(TunedeckError):
    """A model reference that names nothing on this machine."""


class ConfigError(TunedeckError):
    """An invalid configuration value."""


def first_line(err: BaseException, limit: int | None = None, default: str = "") -> str:
    """The first line of `err`'s message, for a one-line report that keeps a long traceback-like
    message (transformers, sqlglot, the hub) out of the UI; `default` when the message is empty."""
    text = str(err).strip()
    if not text:
        return default
    line = text.splitlines()[0]
    return line[:limit] if limit is not None else line

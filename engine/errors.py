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


def _os_error(err: OSError) -> str:
    import errno

    where = err.filename or "a file"
    if err.errno == errno.EROFS:
        return (f"{where}: the file system is read-only; write somewhere else (for the data "
                "home: set TUNEDECK_HOME to a writable folder)")
    if err.errno in (errno.EACCES, errno.EPERM):
        return (f"{where}: permission denied (a read-only folder or file?); make it writable, "
                "or write somewhere else (for the data home: set TUNEDECK_HOME)")
    if err.errno == errno.ENOSPC:
        return f"{where}: the disk is full; free some space and try again"
    if err.errno == errno.ENOENT:
        return f"{where}: no such file or folder; check the path"
    if err.errno == errno.ENOTDIR:
        return f"{where}: a part of this path is a file, not a folder; check the path"
    if err.errno == errno.EISDIR:
        return f"{where}: is a folder; give a file"
    return f"{where}: {err.strerror or err}"


def database_problem(err: BaseException, path: object) -> str:
    """What a SQLite error on the history database means, and what to do; never advice that
    would discard a history that is fine (a read-only or busy file is not a damaged one)."""
    text = str(err)
    low = text.lower()
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return (f"{path}: the history database cannot be written ({text}): its folder or file "
                "is read-only. Commands that only read still work; to record, make it "
                "writable or set TUNEDECK_HOME to a writable folder.")
    if "locked" in low or "busy" in low:
        return (f"{path}: the history database is busy ({text}): another tunedeck is writing. "
                "Try again in a moment.")
    if "malformed" in low or "corrupt" in low:
        return (f"{path}: the history database is damaged ({text}). Keep a copy of the file; "
                f"`sqlite3 {path} .recover | sqlite3 {path}.recovered` saves what can be read, "
                "then put the recovered file in its place.")
    if "not a database" in low:
        return (f"{path}: is not a SQLite database ({text}); if it is not your history, move it "
                "away, or set TUNEDECK_HOME to another folder.")
    if "disk" in low and "full" in low:
        return f"{path}: the disk is full ({text}); free some space and try again."
    return f"{path}: the history database failed: {text}"


def describe_failure(err: BaseException) -> str:
    """The one-line, user-facing message for any failure a front end catches: what went wrong,
    where, and what to do; never a traceback."""
    import sqlite3

    if isinstance(err, TunedeckError):
        return str(err)
    if isinstance(err, OSError):
        return _os_error(err)
    if isinstance(err, sqlite3.Error):
        from engine import paths

        return database_problem(err, paths.db_path())
    if isinstance(err, RecursionError):
        return ("input nested too deeply to read (lists or objects hundreds of levels inside "
                "each other); flatten it")
    if isinstance(err, UnicodeEncodeError) and "surrogate" in str(err):
        return ("text holds a lone surrogate (an escape like \\ud800 that is no character); "
                "`tunedeck data check FILE` names the line and field")
    line = first_line(err)
    return f"{type(err).__name__}: {line}" if line else type(err).__name__

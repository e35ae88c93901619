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

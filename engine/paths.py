"""Where tunedeck keeps its files.

The data home is the platform's user data directory (platformdirs), or `TUNEDECK_HOME` when set.
Nothing is created at import time: callers that write ask for `ensure_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "tunedeck"


def home() -> Path:
    """The data home. `TUNEDECK_HOME` wins over the platform default."""
    override = os.environ.get("TUNEDECK_HOME")
    if override:
        return Path(override).expanduser().resolve()
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False)


def models_dir() -> Path:
    """Converted model caches (safetensors), one folder per model."""
    return home() / "models"


def runs_dir() -> Path:
    """Training run directories (see DESIGN.md, 'The run directory')."""
    return home() / "runs"


def templates_dir() -> Path:
    """User prompt templates, one YAML file each."""
    return home() / "templates"


def exports_dir() -> Path:
    """Merged models and adapters exported for use elsewhere."""
    return home() / "exports"


def evals_dir() -> Path:
    """Saved evaluation results."""
    return home() / "evals"


def db_path() -> Path:
    """The SQLite database of tries and ratings."""
    return home() / "tunedeck.db"


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path

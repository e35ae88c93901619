"""The adapter a run starts from (`adapter:` in a config), resolved as everywhere else."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ConfigError, TunedeckError


def resolve_adapter(ref: str) -> Path:
    """The adapter folder of RUN_ID (or an id prefix), RUN_ID:checkpoint-N, RUN_ID:latest or a
    folder, as everywhere else (`engine.adapters.resolve`); ConfigError naming the setting."""
    from engine.adapters import resolve

    try:
        return resolve(ref).path.resolve()
    except TunedeckError as err:
        raise ConfigError(f"adapter: {err} The adapter to start from is a run id (its final "
                          "adapter), RUN_ID:checkpoint-N, or a folder holding "
                          "adapter_config.json.") from None

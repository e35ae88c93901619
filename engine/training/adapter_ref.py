"""The adapter a run starts from (`adapter:` in a config), resolved as everywhere else, and the
model a preference or RL run loads to start from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def load_start(config: Any, progress: Any = None) -> Any:
    """The model a preference or RL run starts from: for an SFT adapter the base it was trained
    against (a QLoRA adapter's 4-bit base, `engine.adapter_base`), else the config's model."""
    from engine import adapter_base, models

    if not config.adapter:
        return models.load(config.model, progress=progress)
    say = progress or (lambda _text: None)
    try:
        plan = adapter_base.plan_base(config.adapter, model=config.model)
        plan.force_hint = ": set `model:` in the config to it"
        say(plan.line)
        loaded = adapter_base.load_base(plan, progress=progress)
    except TunedeckError as err:
        raise ConfigError(f"adapter: {err}") from None
    for warning in [*plan.warnings, *loaded.extras.get("base_warnings", [])]:
        say(f"warning: {warning}")
    return loaded

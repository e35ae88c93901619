"""The example configs under configs/ as the fitted defaults for their own datasets.

A shipped config whose settings were chosen by measurement (the SQL recipe: docs/evaluation.md)
knows its dataset better than the generic rules in `suggest`, so for that dataset and model the
Train form starts from it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.errors import TunedeckError
from engine.training import config as config_module
from engine.training.config import SFT_METHODS, TrainConfig


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def recipe_for(config: TrainConfig) -> tuple[TrainConfig, Path] | None:
    """The shipped whole-split SFT config for `config`'s dataset and model (dataset kept as
    given), or None."""
    try:
        wanted = config.dataset_path()
    except TunedeckError:
        return None
    for path in config_module.example_configs():  # looked up per call, as tests replace it
        try:
            recipe = TrainConfig.from_yaml(path)
            # Only whole-split recipes: a quick demo (limit / max_steps) is no default to fit.
            whole = recipe.limit is None and recipe.max_steps == -1
            if (whole and recipe.method in SFT_METHODS and recipe.model == config.model
                    and _same_path(recipe.dataset_path(), wanted)):
                return replace(recipe, dataset=config.dataset, name=config.name or recipe.name), path
        except TunedeckError:
            continue  # a broken example config is reported where it is opened, not here
    return None

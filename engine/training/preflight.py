"""Pre-flight: what a run will train on and roughly what it will cost, before it starts. Each
recipe makes its own (`engine.training.recipes`); the report and the checks they share are in
`engine.training.preflight_checks`."""

from __future__ import annotations

from collections.abc import Callable

from engine.training.config import TrainConfig
from engine.training.preflight_checks import PreflightReport
from engine.training.recipes import recipe_for


def preflight(config: TrainConfig, progress: Callable[[str], None] | None = None) -> PreflightReport:
    """Check a config and its data with its recipe's pre-flight. Never raises for a problem the
    report can name."""
    return recipe_for(config.method).preflight(config, progress)

"""The training recipes behind one table: `{method: recipe}`.

A recipe is a method family's pre-flight and run (in the manner of torchtune's recipes and TRL's
config / trainer pairs). The runner is the process (status, lock, signals, failure) and asks this
table what to run; pre-flight asks it what to check. A new method family is one module
(`engine/training/<family>.py` with its `preflight_…` and `train_…`) and one row here.

The families import their libraries when they run, so this table is light to import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError
from engine.training import settings_help


def _sft_preflight(config: Any, progress: Callable[[str], None] | None) -> Any:
    from engine.training.sft import preflight_sft

    return preflight_sft(config, progress)


def _sft_train(run: Any, stop_flag: Any, config: Any) -> str:
    from engine.training.sft import train_sft

    return train_sft(run, stop_flag, config)


def _preference_preflight(config: Any, progress: Callable[[str], None] | None) -> Any:
    from engine.training.preference import preflight_preference

    return preflight_preference(config, progress)


def _preference_train(run: Any, stop_flag: Any, config: Any) -> str:
    from engine.training.preference import train_preference

    return train_preference(run, stop_flag, config)


def _grpo_preflight(config: Any, progress: Callable[[str], None] | None) -> Any:
    from engine.training.grpo import preflight_grpo

    return preflight_grpo(config, progress)


def _grpo_train(run: Any, stop_flag: Any, config: Any) -> str:
    from engine.training.grpo import train_grpo

    return train_grpo(run, stop_flag, config)


@dataclass(frozen=True)
class Recipe:
    family: str  # "sft" | "preference" | "rl"
    summary: str  # one line, for help and errors
    preflight: Callable[[Any, Callable[[str], None] | None], Any]  # -> PreflightReport
    train: Callable[[Any, Any, Any], str]  # (run, stop_flag, config) -> final state
    # What a setting means in this recipe, where that differs from settings_help.COMMON.
    settings: dict[str, str] = field(default_factory=dict)


SFT = Recipe("sft", "supervised fine-tuning on prompt / completion pairs (TRL SFT)",
             _sft_preflight, _sft_train, settings_help.SFT)
PREFERENCE = Recipe("preference", "preference training from rated pairs (TRL DPO / KTO)",
                    _preference_preflight, _preference_train, settings_help.PREFERENCE)
RL = Recipe("rl", "reinforcement learning from verifiable rewards (TRL GRPO)",
            _grpo_preflight, _grpo_train, settings_help.RL)

RECIPES: dict[str, Recipe] = {
    "auto": SFT,  # resolved to qlora or lora for the device (engine.training.method_fit)
    "full": SFT,
    "lora": SFT,
    "qlora": SFT,
    "dora": SFT,
    "dpo": PREFERENCE,
    "kto": PREFERENCE,
    "grpo": RL,
}


def recipe_for(method: str) -> Recipe:
    try:
        return RECIPES[method]
    except KeyError:
        raise ConfigError(f"method: {method!r} is not a training method; choose one of "
                          f"{', '.join(RECIPES)}.") from None


def family_methods(family: str) -> tuple[str, ...]:
    return tuple(m for m, r in RECIPES.items() if r.family == family)


def field_help(method: str, name: str) -> str:
    """What setting `name` means for `method`: the recipe's own line, else the common one."""
    recipe = RECIPES.get(method)
    if recipe is not None and name in recipe.settings:
        return recipe.settings[name]
    return settings_help.COMMON.get(name, "")

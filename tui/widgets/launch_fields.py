"""The Train form's launch fields: one process, or `accelerate launch` with one of the shipped
accelerate configs (DDP, FSDP, DeepSpeed ZeRO-2 / ZeRO-3) and a process count."""

from __future__ import annotations

from typing import Any

from engine.errors import TunedeckError


def launch_choices() -> list[tuple[str, str]]:
    """(label, config name) for the processes select; "" is one process."""
    from engine.training.accelerate_launch import accelerate_configs

    return [("one process", "")] + [(f"accelerate: {c.name}", c.name)
                                    for c in accelerate_configs()]


def launch_options(chosen: Any, count_text: str) -> Any:
    """`LaunchOptions` from the two fields (raises TunedeckError naming the field). A blank
    count takes the accelerate config's, else one per GPU."""
    from engine.training.accelerate_launch import LaunchOptions

    chosen = str(chosen or "")
    count = count_text.strip()
    if count and not count.isdigit():
        raise TunedeckError(f"process count: {count!r} is not a whole number.")
    if not chosen:
        if count and int(count) > 1:
            raise TunedeckError("process count: several processes start through accelerate; "
                                "choose an accelerate config under processes.")
        return LaunchOptions()
    return LaunchOptions.plan(accelerate_config=chosen,
                              num_processes=int(count) if count else None)

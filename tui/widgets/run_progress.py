"""Progress of one run: a bar with step / total, then state, ETA, tokens/s and memory.

The numbers come from the run's own events (their timestamps), never from this process's clock,
so a view that reattaches to a run shows the same ETA as one that watched it start.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from engine.formatting import duration


def progress_line(history: Any) -> str:
    """`running · step 12/40 · ETA 1m20s · 153 tok/s · mem 812 MB` from a RunHistory."""
    total = history.total_steps
    step = history.step
    parts = [history.state, f"step {step}/{total}" if total else f"step {step}"]
    if history.epoch is not None:
        parts.append(f"epoch {history.epoch:.2f}")
    phase = getattr(history, "phase_text", "")  # evaluating 24/72 rows · ETA 1m10s
    if phase:
        parts.append(phase)
    elif history.state in ("starting", "running"):
        parts.append(f"ETA {duration(history.eta_seconds)}")
    if history.tokens_per_s is not None:
        parts.append(f"{history.tokens_per_s:,.0f} tok/s")
    if history.mem_mb is not None:
        parts.append(f"mem {history.mem_mb:,.0f} MB")
    if history.last_loss is not None:
        parts.append(f"loss {history.last_loss:.4f}")
    if history.last_eval_loss is not None:
        parts.append(f"eval {history.last_eval_loss:.4f}")
    parts += reward_parts(history.logs[-1] if history.logs else {})
    return " · ".join(parts)


REWARD_KEYS = (("rewards/chosen", "chosen"), ("rewards/rejected", "rejected"),
               ("rewards/margins", "margin"), ("rewards/accuracies", "acc"))


def reward_parts(event: dict) -> list[str]:
    """Preference runs (DPO / KTO) log implicit rewards, GRPO runs the rewards of their sampled
    completions: show the ones the last step has."""
    parts = grpo_parts(event)
    for key, label in REWARD_KEYS:
        value = event.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:+.3f}" if label != "acc" else f"{label} {value:.2f}")
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def grpo_parts(event: dict) -> list[str]:
    """`reward 0.62±0.31 · sql_exec 0.50±0.53 · format 0.95 · kl 0.0021 · len 38`."""
    if not _is_number(event.get("reward")):
        return []
    parts = [f"reward {event['reward']:.2f}" + (f"±{event['reward_std']:.2f}"
                                                 if _is_number(event.get("reward_std")) else "")]
    for key, value in event.items():
        if key.startswith("rewards/") and key.endswith("/mean") and _is_number(value):
            name = key[len("rewards/"):-len("/mean")]
            std = event.get(f"rewards/{name}/std")
            parts.append(f"{name} {value:.2f}" + (f"±{std:.2f}" if _is_number(std) else ""))
    if _is_number(event.get("kl")):
        parts.append(f"kl {event['kl']:.4f}")
    if _is_number(event.get("completions/mean_length")):
        parts.append(f"len {event['completions/mean_length']:.0f}")
    return parts


class RunProgress(Vertical):
    DEFAULT_CSS = """
    RunProgress { height: auto; padding: 0 1; }
    RunProgress ProgressBar { width: 1fr; }
    RunProgress ProgressBar Bar { width: 1fr; }
    RunProgress #run-progress-title { height: 1; text-style: bold; color: $accent; }
    RunProgress #run-progress-line { height: auto; color: $text-muted; }
    RunProgress #run-progress-error { height: auto; color: $error; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="run-progress-title")
        yield ProgressBar(total=1, show_eta=False, id="run-progress-bar")
        yield Static("", id="run-progress-line")
        yield Static("", id="run-progress-error")

    def on_mount(self) -> None:
        self.query_one("#run-progress-error", Static).display = False

    def update_from(self, history: Any) -> None:
        title = f"{history.run.id} · {history.model} · {history.method}"
        self.query_one("#run-progress-title", Static).update(title)
        bar = self.query_one("#run-progress-bar", ProgressBar)
        # An unknown total would animate an indeterminate bar; step/step keeps it still.
        total = history.total_steps or max(history.step, 1)
        bar.update(total=total, progress=min(history.step, total))
        self.query_one("#run-progress-line", Static).update(progress_line(history))
        error = self.query_one("#run-progress-error", Static)
        error.display = bool(history.error)
        error.update(history.error or "")

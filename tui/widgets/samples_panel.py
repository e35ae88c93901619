"""Sample completions the runner wrote at each sample step: prompt, reference and completion.

With the panel focused, ↑ / ↓ pick a sample (announced with `SamplesPanel.Picked`, so the run
view can rate it); ↓ past the newest one goes back to following new samples.
"""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

KEEP = 30  # newest samples shown; older ones stay in events.jsonl


def _clip(text: Any, limit: int = 600) -> str:
    text = str(text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reward_text(sample: dict[str, Any]) -> str:
    """`1.20 (sql_exec 1 · format 0.2)`: a GRPO sample's weighted reward and each function's."""
    total = sample.get("reward")
    if not isinstance(total, (int, float)):
        return ""
    parts = [f"{name} {value:g}" for name, value in (sample.get("rewards") or {}).items()
             if isinstance(value, (int, float))]
    return f"{total:.2f}" + (f" ({' · '.join(parts)})" if parts else "")


def sample_content(sample: dict[str, Any]) -> Content:
    parts: list[Any] = [
        (f"step {sample.get('step', '?')}", "bold $accent"), "\n",
        ("prompt     ", "$text-muted"), _clip(sample.get("prompt")), "\n",
        ("reference  ", "$text-muted"), _clip(sample.get("reference")), "\n",
        ("completion ", "bold"), (_clip(sample.get("completion")), "$success"),
    ]
    reward = reward_text(sample)
    if reward:  # GRPO: the completion was sampled in training and scored by the rewards
        parts += ["\n", ("reward     ", "$text-muted"), (reward, "bold")]
    return Content.assemble(*parts)


class SamplesPanel(VerticalScroll):
    """Newest samples at the bottom; follows new ones unless the user scrolled up."""

    DEFAULT_CSS = """
    SamplesPanel { height: 1fr; }
    SamplesPanel > .sample { height: auto; margin-bottom: 1; }
    SamplesPanel > #samples-empty { color: $text-muted; }
    SamplesPanel > .sample.picked { background: $boost; }
    """
    # ↑ / ↓ move between samples instead of scrolling by lines: a sample is the unit worth
    # reading (and rating); the view scrolls to keep the picked one in sight.
    BINDINGS = [
        Binding("up", "pick(-1)", "Prev sample", show=False),
        Binding("down", "pick(1)", "Next sample", show=False),
    ]

    class Picked(Message):
        """The sample to act on changed: `position` indexes `SamplesPanel.samples`."""

        def __init__(self, position: int) -> None:
            super().__init__()
            self.position = position

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.samples: list[dict[str, Any]] = []
        self.picked: int | None = None  # None: the newest sample, following new ones

    def on_mount(self) -> None:
        self.mount(Static("No samples yet: the runner writes them every `sample_every` steps.",
                          id="samples-empty"))

    def add_samples(self, samples: list[dict[str, Any]]) -> None:
        if not samples:
            return
        follow = self.is_vertical_scroll_end or not self.samples
        self.samples.extend(samples)
        for empty in self.query("#samples-empty"):
            empty.remove()
        shown = list(self.query(".sample"))
        overflow = len(shown) + len(samples) - KEEP
        for old in shown[: max(overflow, 0)]:
            old.remove()
        self.mount_all(Static(sample_content(s), classes="sample") for s in samples[-KEEP:])
        if self.picked is not None and self.picked < len(self.samples) - KEEP:
            self.picked = None  # the picked sample scrolled out of the kept ones
        self.call_after_refresh(self._mark_picked)
        if follow and self.picked is None:
            self.call_after_refresh(self.scroll_end, animate=False)

    @property
    def current(self) -> int | None:
        """The position of the sample to act on: the picked one, else the newest."""
        if not self.samples:
            return None
        return self.picked if self.picked is not None else len(self.samples) - 1

    def action_pick(self, delta: int) -> None:
        current = self.current
        if current is None:
            return
        oldest = max(len(self.samples) - KEEP, 0)
        new = min(max(current + delta, oldest), len(self.samples) - 1)
        if delta > 0 and current == len(self.samples) - 1:
            self.picked = None  # past the newest: follow new samples again
        else:
            self.picked = new
        self._mark_picked()
        if new != current:
            self.post_message(self.Picked(new))

    def _mark_picked(self) -> None:
        shown = list(self.query(".sample"))
        first = len(self.samples) - len(shown)  # the position of the first shown sample
        for position, widget in enumerate(shown, start=first):
            widget.set_class(position == self.picked, "picked")
            if position == self.picked:
                self.scroll_to_widget(widget, animate=False)

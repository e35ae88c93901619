"""Sample completions the runner wrote at each sample step: prompt, reference and completion."""

from __future__ import annotations

from typing import Any

from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

KEEP = 30  # newest samples shown; older ones stay in events.jsonl


def _clip(text: Any, limit: int = 600) -> str:
    text = str(text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sample_content(sample: dict[str, Any]) -> Content:
    return Content.assemble(
        (f"step {sample.get('step', '?')}", "bold $accent"), "\n",
        ("prompt     ", "$text-muted"), _clip(sample.get("prompt")), "\n",
        ("reference  ", "$text-muted"), _clip(sample.get("reference")), "\n",
        ("completion ", "bold"), (_clip(sample.get("completion")), "$success"),
    )


class SamplesPanel(VerticalScroll):
    """Newest samples at the bottom; follows new ones unless the user scrolled up."""

    DEFAULT_CSS = """
    SamplesPanel { height: 1fr; }
    SamplesPanel > .sample { height: auto; margin-bottom: 1; }
    SamplesPanel > #samples-empty { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.samples: list[dict[str, Any]] = []

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
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)

"""One completion streaming in: a title, the text as it grows, and its timings and costs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static


@dataclass
class CompletionUpdate(Message):
    """The text so far of the completion shown in pane `slot`.

    Carries the whole text, not a delta, so that a newer update can replace an older one still
    waiting in the queue: a fast model cannot flood the UI.
    """

    slot: int
    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CompletionUpdate) and message.slot == self.slot


def metrics_line(result: Any) -> str:
    """`TTFT 0.12 s · 41.2 tok/s · 312 → 48 tokens · eos` for an engine GenerationResult."""
    text = (f"TTFT {result.ttft_s:.2f} s · {result.tokens_per_s:.1f} tok/s · "
            f"{result.prompt_tokens:,} → {result.completion_tokens:,} tokens · "
            f"{result.stop_reason}")
    if result.reused_prefix_tokens:
        text += f" · {result.reused_prefix_tokens:,} cached"
    return text


class CompletionView(Vertical):
    """A titled pane whose body follows the text as it streams, unless the user scrolled up."""

    DEFAULT_CSS = """
    CompletionView { height: 1fr; border: round $panel-lighten-2; }
    CompletionView.running { border: round $accent; }
    CompletionView.failed { border: round $error; }
    CompletionView > VerticalScroll { height: 1fr; }
    CompletionView .completion-body { height: auto; }
    CompletionView .completion-metrics { height: auto; color: $text-muted; }
    CompletionView .completion-answer { height: auto; color: $success; text-style: bold; }
    """

    def __init__(self, title: str = "output", *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.text = ""
        self._title = title

    def compose(self):
        with VerticalScroll():
            yield Static("", classes="completion-body", markup=False)
        yield Static("", classes="completion-answer", markup=False)
        yield Static("", classes="completion-metrics", markup=False)

    def on_mount(self) -> None:
        self.border_title = self._title
        self.query_one(".completion-answer").display = False

    def set_title(self, title: str) -> None:
        self._title = title
        self.border_title = title

    def reset(self, title: str | None = None) -> None:
        """Empty: no text, answer or metrics (the pane now stands for another run)."""
        if title is not None:
            self.set_title(title)
        self.remove_class("running", "failed")
        self.set_text("")
        self.set_answer(None)
        self.set_metrics("")

    def start(self, title: str | None = None) -> None:
        if title is not None:
            self.set_title(title)
        self.remove_class("failed")
        self.add_class("running")
        self.set_text("")
        self.set_answer(None)
        self.set_metrics("generating…")

    def set_text(self, text: str) -> None:
        scroll = self.query_one(VerticalScroll)
        follow = scroll.scroll_y >= scroll.max_scroll_y - 1
        self.text = text
        self.query_one(".completion-body", Static).update(text)
        if follow:
            scroll.call_after_refresh(scroll.scroll_end, animate=False)

    def set_metrics(self, text: str) -> None:
        self.query_one(".completion-metrics", Static).update(text)

    def set_answer(self, answer: str | None) -> None:
        widget = self.query_one(".completion-answer", Static)
        widget.display = answer is not None
        widget.update(answer or "")

    def finish(self, metrics: str, failed: bool = False) -> None:
        self.remove_class("running")
        self.set_class(failed, "failed")
        self.set_metrics(metrics)

    @property
    def metrics(self) -> str:
        return str(self.query_one(".completion-metrics", Static).content)

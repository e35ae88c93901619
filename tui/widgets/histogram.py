"""A horizontal bar chart in text: one labelled bar per bin, scaled to the widget's width.

Plain text, so it renders the same at any size and in snapshots; `bars` holds what is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget


class Histogram(Widget):
    DEFAULT_CSS = """
    Histogram { height: auto; min-height: 1; padding: 0 1; color: $accent; }
    """

    def __init__(self, empty: str = "nothing to show", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.bars: list[tuple[str, int]] = []
        self.caption = ""
        self.empty = empty

    def set_bars(self, bars: Sequence[tuple[str, int]], caption: str = "") -> None:
        self.bars = list(bars)
        self.caption = caption
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, len(self.bars) + (1 if self.caption else 0))

    def render(self) -> Text:
        if not self.bars:
            return Text(self.empty, style="dim")
        label_w = max(len(label) for label, _ in self.bars)
        count_w = max(len(f"{count:,}") for _, count in self.bars)
        room = max(1, self.content_size.width - label_w - count_w - 3)
        peak = max(count for _, count in self.bars) or 1
        text = Text()
        if self.caption:
            text.append(self.caption + "\n", style="bold")
        for i, (label, count) in enumerate(self.bars):
            filled = round(room * count / peak)
            text.append(f"{label:>{label_w}} ")
            text.append("█" * filled)
            text.append(" " * (room - filled) + f" {count:>{count_w},}")
            if i < len(self.bars) - 1:
                text.append("\n")
        return text

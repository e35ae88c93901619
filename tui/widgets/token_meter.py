"""A one-line meter of the prompt's tokens against what the context window leaves for it."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

BAR = 16


def meter_content(used: int, available: int, window: int, note: str = "") -> Content:
    """`▰▰▰▱▱ 312 / 7,936 tokens · 4%` coloured by how full the budget is."""
    if available <= 0:
        return Content.styled(note or "no prompt yet", "$text-muted")
    share = used / available
    filled = min(BAR, round(share * BAR))
    style = "$success" if share <= 0.75 else "$warning" if share <= 1.0 else "$error"
    parts: list[tuple[str, str] | str] = [
        ("▰" * filled, style), ("▱" * (BAR - filled), "$text-muted"), " ",
        (f"{used:,}", f"bold {style}"), f" / {available:,} tokens",
        (f" · {share:.0%}", "$text-muted"),
    ]
    if note:
        parts.append((f" · {note}", "$text-muted"))
    return Content.assemble(*parts)


class TokenMeter(Static):
    """Prompt tokens used / available (the window minus max_new_tokens)."""

    DEFAULT_CSS = """
    TokenMeter { height: 1; width: 1fr; }
    """

    used: reactive[int] = reactive(0)
    available: reactive[int] = reactive(0)
    window: reactive[int] = reactive(0)
    note: reactive[str] = reactive("")

    def set_budget(self, used: int, available: int, window: int, note: str = "") -> None:
        self.set_reactive(TokenMeter.used, used)
        self.set_reactive(TokenMeter.available, available)
        self.set_reactive(TokenMeter.window, window)
        self.note = note
        self._show()

    def clear(self, note: str = "") -> None:
        self.set_budget(0, 0, 0, note)

    def watch_note(self) -> None:
        self._show()

    def _show(self) -> None:
        self.update(meter_content(self.used, self.available, self.window, self.note))

    @property
    def over(self) -> bool:
        return self.available > 0 and self.used > self.available

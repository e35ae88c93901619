"""One dataset row in full (Enter on the Data screen's Rows tab): every field, not the clipped
cells of the table."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

FIELDS = ("system", "instruction", "prompt", "completion", "rationale", "answer", "chosen",
          "rejected", "label")


def row_text(example: Any) -> str:
    """Every non-empty field of an engine `Example`, one heading per field."""
    parts = []
    for name in FIELDS:
        value = getattr(example, name, None)
        if value in (None, ""):
            continue
        parts.append(f"── {name} ──\n{value}")
    if getattr(example, "messages", None):
        parts.append("── messages ──\n" + json.dumps(example.messages, indent=1,
                                                    ensure_ascii=False))
    for name, value in (getattr(example, "extra", None) or {}).items():
        parts.append(f"── {name} (not used) ──\n{value}")
    return "\n\n".join(parts) or "(empty row)"


class RowScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]
    DEFAULT_CSS = """
    RowScreen { align: center middle; }
    RowScreen > Vertical {
        width: 90%; max-width: 120; height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    RowScreen VerticalScroll { height: 1fr; }
    RowScreen #row-text { height: auto; }
    """

    def __init__(self, example: Any) -> None:
        super().__init__()
        self.example = example

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Line {self.example.line}", classes="title")
            with VerticalScroll(id="row-scroll"):
                yield Static(row_text(self.example), id="row-text", markup=False)
            yield Static("↑ ↓ PgUp PgDn scroll · Esc closes", classes="dim")

    def on_mount(self) -> None:
        self.query_one("#row-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)

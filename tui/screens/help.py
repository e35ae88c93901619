"""`?`: every key binding that is live on the screen underneath, and the screen keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss_help", "Close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    HelpScreen DataTable { height: auto; }
    HelpScreen .help-title { text-style: bold; color: $accent; margin: 1 0 0 0; }
    """

    def __init__(self, title: str, rows: list[tuple[str, str, str]], intro: str = "") -> None:
        super().__init__()
        self._title = title
        self._rows = rows
        self._intro = intro

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(f"Keys — {self._title}", classes="help-title")
            if self._intro:
                yield Static(self._intro)
            table: DataTable = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("key", "action", "where")
            for row in self._rows:
                table.add_row(*row)
            yield table
            yield Static("Esc closes this help. Ctrl+P opens the command palette.", classes="dim")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)

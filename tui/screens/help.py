"""`?`: the keys of the screen underneath, its own first, then the ones that work everywhere.

One scrolling list (no scroll area inside another), focused at once so the arrows and PgUp/PgDn
move through it. Textual's generic keys (copy, cursor movement in a text box, focus cycling) are
left out: they are the same on every screen and would push the screen's own keys off view.
"""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

from tui.screens.registry import SCREENS

_NAMES = {"escape": "Esc", "question_mark": "?", "plus": "+", "minus": "-", "space": "Space",
          "enter": "Enter", "left_square_bracket": "[", "right_square_bracket": "]",
          "pageup": "PgUp", "pagedown": "PgDn", "delete": "Del"}


def key_label(key: str) -> str:
    """`ctrl+r,f5` → `Ctrl+R`: the first key of a binding, as a user types it."""
    parts = key.split(",")[0].strip().split("+")
    *mods, name = parts
    name = _NAMES.get(name, name.upper() if len(name) == 1 or name[:1] == "f" else name)
    return "+".join([*(m.capitalize() for m in mods), name])


def _generic(node: Any, binding: Binding) -> bool:
    """A key every Textual screen, app or built-in widget has, not one this screen chose."""
    if type(node).__module__.startswith("textual.") or binding.action == "command_palette":
        return True  # the palette has its own row below
    return any(isinstance(b, Binding) and b.action == binding.action
               for base in (Screen, ModalScreen) for b in base.BINDINGS)


def help_rows(app: App) -> list[tuple[str, str, str]]:
    """(key, action, where) for every key live on the current screen: the screen's footer keys
    first, then its other keys, then the ones that work everywhere, then the screens."""
    ranked: list[tuple[int, str, str, str]] = []
    seen: set[str] = set()
    for active in app.screen.active_bindings.values():
        binding, node = active.binding, active.node
        if not binding.description or binding.action.startswith(("switch_mode", "app.switch")):
            continue
        if _generic(node, binding):
            continue
        action = binding.action.split("(")[0]
        # 1-5 stars is one row, not five: a digit key run for one action shows its first key.
        once = action if binding.key.isdigit() else binding.description
        if once in seen or binding.description in seen:
            continue
        seen.update((once, binding.description))
        label = binding.key_display if binding.key_display and len(
            binding.key_display) > 1 else key_label(binding.key)
        if node is app:
            rank, where = 2, "everywhere"
        else:
            rank, where = (0 if binding.show else 1), "this screen"
        ranked.append((rank, label, binding.description, where))
    ranked.sort(key=lambda row: row[0])
    rows = [(label, description, where) for _, label, description, where in ranked]
    rows += [(entry.key.upper(), f"{entry.title}: {entry.description}", "everywhere")
             for entry in SCREENS]
    rows.append(("Ctrl+P", "command palette: screens, model, theme", "everywhere"))
    rows.append(("Tab", "move the focus (Shift+Tab back)", "everywhere"))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss_help", "Close"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 90%; max-width: 100; height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    HelpScreen DataTable { height: 1fr; }
    HelpScreen .help-intro { height: auto; margin-top: 1; }
    HelpScreen .help-title { text-style: bold; color: $accent; }
    """

    def __init__(self, title: str, rows: list[tuple[str, str, str]], intro: str = "") -> None:
        super().__init__()
        self._title = title
        self._rows = rows
        self._intro = intro

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Keys — {self._title}", classes="help-title")
            table: DataTable = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("key", "action", "where")
            for row in self._rows:
                table.add_row(*row)
            yield table
            if self._intro:  # under the keys, so it never pushes them off a small terminal
                yield Static(self._intro, classes="help-intro")
            yield Static("Esc closes this help.", classes="dim")

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def action_dismiss_help(self) -> None:
        self.dismiss(None)

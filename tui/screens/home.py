"""Home: the active model (loading, ready or failed) and the screens to go to."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, LoadingIndicator, Static

from tui.messages import ModelStateChanged
from tui.screens.base import WorkbenchScreen
from tui.screens.registry import SCREENS


def _count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    return f"{n:,}"


def model_rows(info: Any) -> list[tuple[str, str]]:
    return [
        ("model", info.name),
        ("parameters", _count(info.parameters)),
        ("context window", f"{info.context_window:,} tokens"),
        ("device", info.device),
        ("dtype", info.dtype + (f" ({info.quantization})" if info.quantization else "")),
        ("chat template", "yes" if info.chat_template else "no (raw completion mode)"),
        ("loaded from", info.location),
        ("load time", f"{info.load_seconds:.1f} s"),
    ]


def screens_table() -> Table:
    """The screens and what each is for; the last column wraps at word boundaries, so a narrow
    terminal gets two lines for a row instead of a description cut mid-word."""
    table = Table(box=None, expand=True, pad_edge=False, header_style="bold")
    table.add_column("key", no_wrap=True)
    table.add_column("screen", no_wrap=True)
    table.add_column("what for", ratio=1, overflow="fold")
    for entry in SCREENS:
        table.add_row(entry.key.upper(), entry.title, entry.description)
    table.add_row("?", "Help", "the keys of the screen in front")
    table.add_row("^P", "Palette", "every command by name: screens, model, theme")
    return table


class HomeScreen(WorkbenchScreen):
    HELP_TITLE = "Home"
    HELP = ("Home shows the active model. The function keys switch screens; m chooses another "
            "model, r reloads this one.")
    # The function keys are listed in this footer only; other screens' footers keep their room
    # for their own keys. At 80 columns m and F2-F8 fill it: r (reload) and Ctrl+P (the palette)
    # are in `?` and in the table below.
    BINDINGS = [
        Binding("m", "app.choose_model", "Model"),
        Binding("r", "reload", "Reload", show=False),
        *[Binding(entry.key, f"app.switch_mode('{entry.name}')", entry.title)
          for entry in SCREENS[1:]],
    ]
    DEFAULT_CSS = """
    HomeScreen #model-panel { height: auto; border: round $primary; padding: 0 1; }
    HomeScreen #model-loading { height: 3; }
    HomeScreen #model-table { height: auto; }
    HomeScreen #screens { height: auto; margin-top: 1; border: round $panel-lighten-2; padding: 0 1; }
    HomeScreen #screens-table { height: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="model-panel"):
            yield Static("Active model", classes="title")
            yield LoadingIndicator(id="model-loading")
            yield Static("", id="model-status")
            yield DataTable(id="model-table", show_header=False, cursor_type="none")
        with Horizontal(id="screens"):
            yield Static(screens_table(), id="screens-table")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#model-panel").border_title = "model"
        table = self.query_one("#model-table", DataTable)
        table.add_columns("field", "value")
        self.watch(self.app, "model_detail", self._detail_changed)
        self._refresh()

    def on_model_state_changed(self, message: ModelStateChanged) -> None:
        self._refresh()

    def _detail_changed(self, detail: str) -> None:
        if getattr(self.app, "model_state", "") == "loading":
            self.query_one("#model-status", Static).update(detail)

    def _refresh(self) -> None:
        state = getattr(self.app, "model_state", "idle")
        info = getattr(self.app, "model_info", None)
        loading = self.query_one("#model-loading", LoadingIndicator)
        status = self.query_one("#model-status", Static)
        table = self.query_one("#model-table", DataTable)
        loading.display = state == "loading"
        table.clear()
        status.remove_class("error")
        if state == "ready" and info is not None:
            status.update("")
            status.display = False
            for row in model_rows(info):
                table.add_row(*row)
        elif state == "error":
            status.display = True
            status.add_class("error")
            status.update(f"{self.app.model_detail}\nPress m to choose another model.")
        else:
            status.display = True
            status.update(getattr(self.app, "model_detail", "") or "No model loaded.")

    def action_reload(self) -> None:
        self.app.load_model(self.app.model_ref)

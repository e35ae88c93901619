"""Choose the active model: a list of what is on this machine, or any reference typed in."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.screens.reference_picker import ReferencePicker


class ModelPicker(ReferencePicker):
    DEFAULT_CSS = """
    ModelPicker { align: center middle; }
    ModelPicker > Vertical {
        width: 90%; max-width: 110; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    ModelPicker OptionList { height: auto; max-height: 14; }
    """

    def __init__(self, current: str) -> None:
        super().__init__()
        self._current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Choose the active model", classes="title")
            yield OptionList(id="models")
            yield Static("…or type a folder with config.json, a .gguf file or a hub id, then Enter:",
                         classes="dim")
            yield Input(placeholder=self._current, id="ref")

    def on_mount(self) -> None:
        self.query_one("#models", OptionList).focus()
        self._list_models()

    @work(thread=True, exclusive=True, exit_on_error=False, group="models")
    def _list_models(self) -> None:
        from engine.model_catalog import available_models

        entries = available_models()
        self.app.call_from_thread(self._show, entries)

    def _show(self, entries: list) -> None:
        options = self.query_one("#models", OptionList)
        for entry in entries:
            label = f"{entry.name}  [dim]{entry.kind} · {entry.location}[/dim]"
            options.add_option(Option(label, id=entry.ref))
        if not entries:
            options.add_option(Option("No models found on this machine", disabled=True))
        else:
            # Highlight the first entry, so Enter takes it without a Down first; the active
            # model's entry when it is listed.
            refs = [entry.ref for entry in entries]
            options.highlighted = refs.index(self._current) if self._current in refs else 0

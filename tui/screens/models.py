"""Models: every model on this machine (the default, converted caches, exported merged models),
and a key to make one the active model."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, Static

from engine.formatting import human_bytes
from tui.messages import ModelStateChanged
from tui.screens.base import WorkbenchScreen


class ModelsScreen(WorkbenchScreen):
    HELP_TITLE = "Models"
    HELP = ("Every model on this machine: the default, converted GGUF caches and the models "
            "exported with `tunedeck export RUN --merge NAME` (saved in the exports folder). "
            "Enter or u makes the highlighted one the active model; m types any reference; e exports "
            "a run (merged folder, GGUF + Ollama Modelfile, or the adapter).")
    BINDINGS = [
        Binding("u", "use", "Use"),
        Binding("r", "refresh", "Refresh"),
        Binding("m", "app.choose_model", "Other model"),
        Binding("e", "export", "Export a run"),
    ]
    DEFAULT_CSS = """
    ModelsScreen #models-panel { height: 1fr; border: round $primary; padding: 0 1; }
    ModelsScreen #models-table { height: 1fr; }
    ModelsScreen #models-active { height: auto; }
    ModelsScreen #models-hint { height: auto; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="models-panel"):
            yield Static("", id="models-active")
            yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="models-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#models-panel").border_title = "models on this machine"
        table = self.query_one("#models-table", DataTable)
        table.add_column(" ", key="mark", width=1)
        table.add_column("name", key="name")
        table.add_column("kind", key="kind")
        table.add_column("size", key="size")
        table.add_column("location", key="location")
        self._show_active()
        self.action_refresh()

    # ------------------------------------------------------------------ listing
    def action_refresh(self) -> None:
        self._list_models()

    @work(thread=True, exclusive=True, exit_on_error=False, group="models",
          description="Listing models")
    def _list_models(self) -> None:
        from engine import paths
        from engine.model_catalog import available_models

        entries = available_models()
        self.app.call_from_thread(self._show, entries, str(paths.exports_dir()))

    def _show(self, entries: list[Any], exports: str) -> None:
        self.entries = entries
        table = self.query_one("#models-table", DataTable)
        keep = table.cursor_row
        table.clear()
        for entry in entries:
            name = f"{entry.name} (default)" if entry.default else entry.name
            table.add_row(self._mark(entry), name, entry.kind, human_bytes(entry.size_bytes),
                          entry.location, key=entry.ref)
        if entries:
            table.move_cursor(row=min(keep, len(entries) - 1))
        exported = sum(1 for e in entries if e.kind.startswith("exported"))
        self.query_one("#models-hint", Static).update(
            f"{len(entries)} model(s), {exported} exported. Exports live in {exports}: "
            "e exports a run (or `tunedeck export RUN_ID --merge NAME`).")

    def action_export(self) -> None:
        from tui.screens.runs_export import open_export

        open_export(self)

    def _is_active(self, entry: Any) -> bool:
        if getattr(self.app, "model_state", "idle") not in ("ready", "loading"):
            return False
        ref = getattr(self.app, "model_ref", None)
        info = getattr(self.app, "model_info", None)
        return ref in (entry.ref, entry.location) or (
            info is not None and info.location == entry.location)

    def _mark(self, entry: Any) -> str:
        return "●" if self._is_active(entry) else ""

    def _show_active(self) -> None:
        state = getattr(self.app, "model_state", "idle")
        ref = getattr(self.app, "model_ref", "")
        quantization = getattr(getattr(self.app, "model_info", None), "quantization", None)
        # A 4-bit active model is an adapter's own base (QLoRA): say so, and how to leave it.
        how = (f" · loaded {quantization}, the base the active adapter was trained on; u on it "
               "reloads it in full precision") if quantization and state == "ready" else ""
        text = {"ready": f"Active model: {ref}{how}", "loading": f"Loading {ref}…",
                "error": f"Could not load {ref}: {getattr(self.app, 'model_detail', '')}"}
        self.query_one("#models-active", Static).update(text.get(state, "No model loaded"))
        table = self.query_one("#models-table", DataTable)
        for entry in self.entries:
            if entry.ref in table.rows:
                table.update_cell(entry.ref, "mark", self._mark(entry))

    def on_model_state_changed(self, message: ModelStateChanged) -> None:
        self._show_active()

    # ------------------------------------------------------------------ choosing
    def action_use(self) -> None:
        table = self.query_one("#models-table", DataTable)
        if not self.entries or table.cursor_row < 0:
            self.notify("No model to use: the list is empty.", severity="warning")
            return
        self._use(self.entries[table.cursor_row].ref)

    @on(DataTable.RowSelected, "#models-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self._use(str(event.row_key.value))

    def _use(self, ref: str) -> None:
        quantized = getattr(getattr(self.app, "model_info", None), "quantization", None)
        if getattr(self.app, "model_ref", None) == ref and self.app.model_state in (
                "ready", "loading") and not quantized:
            self.notify(f"{ref} is already the active model.")
            return
        self.app.load_model(ref)
        self._show_active()

"""Export a run from the TUI: the dialog that asks what to export (merged Hugging Face folder,
GGUF + Ollama Modelfile, or the adapter alone), and the worker that does it.

The same engine calls as `tunedeck export`; the work runs in a thread worker started on the
calling screen, so a failure is that screen's worker error (a notification), never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, Select

KINDS = [("GGUF + Ollama Modelfile (llama.cpp, Ollama)", "gguf"),
         ("merged Hugging Face folder (transformers)", "merge"),
         ("adapter only (PEFT)", "adapter")]
# Mirrors engine.gguf_export.QUANTS without importing the engine's heavy side into the TUI.
QUANTS = ("f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")


@dataclass
class ExportRequest:
    ref: str     # an adapter reference: RUN_ID or RUN_ID:checkpoint-N
    kind: str    # gguf | merge | adapter
    name: str    # a bare name lands in the exports folder
    quant: str = "f16"


def default_name(ref: str, kind: str) -> str:
    parts = ref.replace(":", "-").split("-", 2)
    stem = parts[2] if len(parts) == 3 and parts[0].isdigit() else ref.replace(":", "-")
    return f"{stem}-{kind}"


class ExportDialog(ModalScreen[ExportRequest | None]):
    """Choose the adapter, the kind of export, its name and (GGUF) the tensor type."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("ctrl+s", "export", "Export", priority=True)]
    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog #export-box { width: 76; max-width: 100%; height: auto; padding: 1 2;
                               border: round $primary; background: $surface; }
    ExportDialog Label { margin-top: 1; }
    ExportDialog #export-buttons { height: auto; margin-top: 1; }
    ExportDialog #export-quant-row { height: auto; }
    """

    def __init__(self, adapters: list[tuple[str, str]], selected: str | None = None) -> None:
        super().__init__()
        self.adapters = adapters  # (label, ref)
        self.selected = selected if selected in {r for _, r in adapters} else (
            adapters[0][1] if adapters else None)

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label("Adapter")
            yield Select(self.adapters, value=self.selected, allow_blank=False,
                         id="export-adapter")
            yield Label("Export as")
            yield Select(KINDS, value="gguf", allow_blank=False, id="export-kind")
            with Vertical(id="export-quant-row"):
                yield Label("GGUF tensor type (f16 keeps the weights; q8_0 halves the size)")
                yield Select([(q, q) for q in QUANTS], value="f16", allow_blank=False,
                             id="export-quant")
            yield Label("Name (saved in the exports folder) or a path")
            yield Input(default_name(self.selected or "run", "gguf"), id="export-name")
            with Horizontal(id="export-buttons"):
                yield Button("Export (Ctrl+S)", variant="primary", id="export-go")
                yield Button("Cancel (Esc)", id="export-cancel")

    def on_mount(self) -> None:
        self.query_one("#export-box").border_title = "export a run"

    def on_select_changed(self, event: Select.Changed) -> None:
        kind = self.query_one("#export-kind", Select).value
        self.query_one("#export-quant-row").display = kind == "gguf"
        name = self.query_one("#export-name", Input)
        ref = str(self.query_one("#export-adapter", Select).value)
        # Follow the choices until the user types a name of their own.
        if any(name.value == default_name(r, k) for _, r in self.adapters for _, k in KINDS):
            name.value = default_name(ref, str(kind))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-go":
            self.action_export()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_export()

    def action_export(self) -> None:
        name = self.query_one("#export-name", Input).value.strip()
        if not name:
            self.notify("Give the export a name.", severity="warning")
            return
        self.dismiss(ExportRequest(ref=str(self.query_one("#export-adapter", Select).value),
                                   kind=str(self.query_one("#export-kind", Select).value),
                                   name=name,
                                   quant=str(self.query_one("#export-quant", Select).value)))

    def action_cancel(self) -> None:
        self.dismiss(None)


def do_export(request: ExportRequest, say: Any) -> str:
    """Run the export (in a worker thread) and return the one-line report for the user."""
    if request.kind == "gguf":
        from engine import gguf_export

        result = gguf_export.export_gguf(request.ref, request.name, quant=request.quant,
                                         progress=say)
        commands = result.run_commands()
        how = (f" Run it with: {commands[0]}" if commands else
               f" Ollama: ollama create NAME -f {result.modelfile}")
        return f"Wrote {result.gguf} and its Modelfile.{how}"
    from engine import export

    if request.kind == "merge":
        result = export.export_merged(request.ref, request.name, progress=say)
        return f"Wrote the merged model to {result.path}; F8 (Models) lists it."
    result = export.export_adapter(request.ref, request.name)
    return f"Wrote the adapter to {result.path}."


def open_export(screen: Screen, selected: str | None = None) -> None:
    """List the adapters, ask what to export, and export it in a worker on `screen`."""
    from engine.adapters import list_available

    found = [(info.label, info.ref) for info in list_available()]
    if not found:
        screen.notify("No run has an adapter to export yet: F4 (Train) makes one.",
                      severity="warning")
        return

    def chosen(request: ExportRequest | None) -> None:
        if request is not None:
            start_export(screen, request)

    screen.app.push_screen(ExportDialog(found, selected), chosen)


def start_export(screen: Screen, request: ExportRequest) -> None:
    app = screen.app

    def say(text: str) -> None:
        app.call_from_thread(screen.notify, text, title="Export", timeout=4)

    def work() -> None:
        report = do_export(request, say)
        app.call_from_thread(screen.notify, report, title="Export done", timeout=20)

    screen.notify(f"Exporting {request.ref} as {request.kind}…", title="Export")
    screen.run_worker(work, thread=True, exclusive=True, exit_on_error=False, group="export",
                      description="Export")

"""Choose an adapter for the active model: the base model, any run's final adapter or
checkpoint, or a folder typed in. `AdapterPicker` dismisses with the adapter reference, `BASE`,
or None; `AdapterControls` puts it (and base-vs-adapter compare) into a generating screen."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.messages import AdapterSwitched
from tui.screens.base import describe_error
from tui.screens.reference_picker import ReferencePicker

BASE = ":base"  # the choice "no adapter"; never a valid adapter reference


class AdapterPicker(ReferencePicker):
    DEFAULT_CSS = """
    AdapterPicker { align: center middle; }
    AdapterPicker > Vertical {
        width: 90%; max-width: 110; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    AdapterPicker OptionList { height: auto; max-height: 16; }
    AdapterPicker .dim { color: $text-muted; }
    """

    def __init__(self, loaded: Any = None, active: str | None = None) -> None:
        """`loaded`: the active LoadedModel (adapters trained on another model are flagged);
        `active`: the reference of the adapter in use, None for the base."""
        super().__init__()
        self._loaded = loaded
        self._active = active
        self.adapters: list[Any] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Choose an adapter for the active model", classes="title")
            yield OptionList(id="adapters")
            yield Static("…or type RUN_ID, RUN_ID:checkpoint-N or an adapter folder, then Enter:",
                         classes="dim")
            yield Input(placeholder="RUN_ID[:checkpoint-N] or a folder", id="adapter-ref")

    def on_mount(self) -> None:
        self.query_one("#adapters", OptionList).focus()
        self._list_adapters()

    @work(thread=True, exclusive=True, exit_on_error=False, group="adapters",
          description="Listing adapters")
    def _list_adapters(self) -> None:
        from engine.adapter_base import read_record
        from engine.adapters import list_available
        from engine.errors import TunedeckError

        found = list_available()
        notes: list[str | None] = []
        for adapter in found:
            try:  # each adapter brings its own base: show which
                record = read_record(adapter)
                notes.append(f"on {record.describe()}" if record.known else None)
            except TunedeckError:
                notes.append("base record unreadable")
        self.app.call_from_thread(self._show, found, notes)

    def _show(self, found: list[Any], notes: list[str | None]) -> None:
        self.adapters = found
        options = self.query_one("#adapters", OptionList)
        options.clear_options()
        mark = "● " if self._active is None else "  "
        options.add_option(Option(f"{mark}base model (no adapter)", id=BASE))
        for info, note in zip(found, notes, strict=True):
            mark = "● " if info.ref == self._active else "  "
            detail = " · ".join(x for x in (info.method, info.state) if x)
            label = f"{mark}{info.label}  [dim]{detail}[/dim]"
            if note:
                label += f"  [dim]· {note.replace('[', chr(92) + '[')}[/dim]"
            options.add_option(Option(label, id=info.ref))
        if not found:
            options.add_option(Option("  No adapters yet: train one on the Train screen (F4)",
                                      disabled=True))
        options.highlighted = 0


class AdapterControls(Screen):
    """Adapters for a screen that generates (the Playground): Ctrl+F chooses an adapter for the
    active model, Ctrl+B toggles base-vs-adapter compare (the same input, side by side).

    The host screen provides ``_loaded()``, ``_get_generator(loaded)``, ``_generating``,
    ``_compare``, ``_ensure_panes(n)`` and ``_set_status(text, error=False)``, and passes its
    jobs through `adapter_jobs` before it runs them: in base-vs-adapter mode its one job becomes
    two, each carrying a generator bound to its adapter (``job.generator``).
    """

    # Not in the footer (the host's keys fill it); `?` lists them.
    BINDINGS = [
        Binding("ctrl+f", "choose_adapter", "Adapter (fine-tuned)", priority=True, show=False),
        Binding("ctrl+b", "toggle_adapter_compare", "Base vs adapter", priority=True,
                show=False),
    ]
    adapter_compare = False
    _adapter_busy = False

    def _adapters(self, loaded: Any) -> Any:
        from engine.adapters import EXTRAS_KEY

        return loaded.extras.get(EXTRAS_KEY) if loaded is not None else None

    def action_choose_adapter(self) -> None:
        if getattr(self, "_generating", False) or self._adapter_busy:
            self.notify("Wait for the run to finish (Esc cancels).", severity="warning")
            return
        loaded = self._loaded()
        if loaded is None:
            self.notify("The model is not ready yet.", severity="warning")
            return
        adapters = self._adapters(loaded)
        info = adapters.active_info if adapters is not None else None
        self.app.push_screen(AdapterPicker(loaded, info.ref if info else None),
                             self._adapter_chosen)

    def _adapter_chosen(self, ref: str | None) -> None:
        loaded = self._loaded()
        if ref is None or loaded is None:
            return
        self._adapter_busy = True
        self._set_status("Switching to the base model…" if ref == BASE
                         else f"Loading adapter {ref}…")
        self._switch_adapter(loaded, ref)

    @work(thread=True, exclusive=True, exit_on_error=False, group="adapter",
          description="Loading the adapter")
    def _switch_adapter(self, loaded: Any, ref: str) -> None:
        """Posts `AdapterSwitched`. An adapter goes on the base it was trained against: the
        active model when it is that base, else that base is loaded here (and becomes the
        active model)."""
        from engine.adapter_base import ensure_base
        from engine.adapters import AdapterSet, resolve

        try:
            if ref == BASE:
                AdapterSet.of(loaded).activate(None)
                self.post_message(AdapterSwitched("base model (no adapter)"))
                return
            info = resolve(ref)
            base, plan, warnings = ensure_base(
                info, loaded,
                progress=lambda text: self.app.call_from_thread(self._set_status, text))
            AdapterSet.of(base).attach(info)
        except Exception as err:
            self.post_message(AdapterSwitched(error=describe_error(err)))
            raise  # the screen's error path tells the user too
        self.post_message(AdapterSwitched(info.label, plan.line, warnings,
                                          base if base is not loaded else None,
                                          plan.model or ""))

    @on(AdapterSwitched)
    def _adapter_switched(self, event: AdapterSwitched) -> None:
        self._adapter_busy = False
        if event.error:
            self._set_status(event.error, error=True)
            return
        label = event.label
        if event.new_base is not None:
            self.app.adopt_model(event.new_base, event.base_ref or event.new_base.info.ref)
        self.sub_title = "" if label.startswith("base model") else f"adapter: {label}"
        hint = "" if label.startswith("base model") else " Ctrl+B compares it with the base."
        # After the model-state message adopting a base posts (it resets the status).
        self.call_later(self._set_status,
                        f"{event.line}. Using it.{hint}" if event.line
                        else f"Using {label}.{hint}")
        for warning in event.warnings or []:
            self.notify(warning, title="Adapter", severity="warning", timeout=8)

    def action_toggle_adapter_compare(self) -> None:
        if getattr(self, "_generating", False):
            self.notify("Wait for the run to finish (Esc cancels).", severity="warning")
            return
        adapters = self._adapters(self._loaded())
        if not self.adapter_compare and (adapters is None or adapters.active is None):
            self.notify("Choose an adapter first (Ctrl+F).", severity="warning")
            return
        if not self.adapter_compare and getattr(self, "_compare", False):
            self.notify("Leave strategy compare (Ctrl+T) first: base vs adapter runs one "
                        "strategy.", severity="warning")
            return
        self.adapter_compare = not self.adapter_compare
        if self.adapter_compare:
            panes = self._ensure_panes(2)
            panes[0].set_title("base")
            panes[1].set_title(adapters.active_info.label)
            self._set_status("Base vs adapter: Ctrl+R runs the same input through both.")
        else:
            self._ensure_panes(1)[0].set_title("output")
            self._set_status("Single mode.")

    def adapter_jobs(self, jobs: list[Any], loaded: Any) -> list[Any]:
        """In base-vs-adapter mode, the one job becomes two: the base and the active adapter.
        Otherwise the jobs are returned as they are."""
        from dataclasses import replace

        from engine.errors import TunedeckError

        if self._adapter_busy:
            raise TunedeckError("An adapter is loading; run again when it is ready.")
        adapters = self._adapters(loaded)
        if self.adapter_compare:
            if adapters is None or adapters.active is None:
                raise TunedeckError("Base vs adapter needs an adapter: Ctrl+F chooses one, "
                                    "Ctrl+B leaves this mode.")
            if len(jobs) != 1:
                raise TunedeckError("Base vs adapter runs one strategy: leave strategy compare "
                                    "(Ctrl+T) first.")
        if not self.adapter_compare:
            return jobs
        generator = self._get_generator(loaded)
        job = jobs[0]
        base = adapters.bind(generator, None)
        tuned = adapters.bind(generator)
        return [replace(job, slot=0, label=f"{job.label} · {base.label}", generator=base),
                replace(job, slot=1, label=f"{job.label} · {tuned.label}", generator=tuned)]

"""Playground: edit a prompt template, fill its variables, pick a strategy and watch it generate.

The left column holds four tabs (template, inputs, strategy, rendered prompt); the right column
the live token meter and the output, one pane per strategy in compare mode. Every finished run
is recorded in the history store; in single-run mode the rating bar under the output then points
at that try, so the Rate screen's keys (1-5, + / -, e) rate it in place.

Where the parts live: the Inputs and Strategy tabs are widgets (`tui.widgets.prompt_inputs`,
`tui.widgets.strategy_form`); rendering and counting the prompt is `playground_prompt`; runs
(jobs, the worker, the history record) are `playground_run`, whose loop is
`engine.strategy_run.run_strategy` (the one self-consistency, shared with the CLI); layout modes
and saved settings are `playground_modes` and `playground_settings`. This file composes the
screen and holds the template list, the dataset worker, panes, rating and history.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import (
    Footer,
    Header,
    Input,
    Label,
    Select,
    SelectionList,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
)
from textual.worker import get_current_worker

from engine.errors import TunedeckError
from tui.messages import DatasetLoaded, ModelStateChanged
from tui.screens.adapter_picker import AdapterControls
from tui.screens.base import WorkbenchScreen, describe_error
from tui.screens.playground_modes import PlaygroundModes
from tui.screens.playground_prompt import PlaygroundPrompt, template_error_text
from tui.screens.playground_run import MAX_PANES, PlaygroundRun, RunJob, stored_metrics
from tui.widgets.completion_view import CompletionView
from tui.widgets.prompt_inputs import InputsPanel
from tui.widgets.rating_bar import RATING_BINDINGS, RatingBar, RatingKeys
from tui.widgets.strategy_form import StrategyForm, number
from tui.widgets.token_meter import TokenMeter

__all__ = ["PlaygroundScreen", "RunJob", "sample_for_template"]



def sample_for_template(name: str) -> Path | None:
    """The shipped sample dataset a built-in template was written for, if any."""
    from engine.data import SAMPLE_NAMES, sample_path

    for sample in SAMPLE_NAMES:
        if name.startswith(sample.replace("_", "-")):
            path = Path(sample_path(sample))
            return path if path.exists() else None
    return None


# The footer is full of the Playground's own keys: "e" (edit the ideal answer) is listed in the
# rating bar's hint line instead.
PLAYGROUND_RATING_BINDINGS = [replace(b, show=False) for b in RATING_BINDINGS]


class PlaygroundScreen(RatingKeys, PlaygroundRun, PlaygroundPrompt, PlaygroundModes,
                       AdapterControls, WorkbenchScreen,
                       inherit_bindings=False):
    HELP_TITLE = "Playground"
    HELP = (
        "Edit the template (Jinja: {{ variable }}), fill its variables on the Inputs tab or load a "
        "dataset row (Ctrl+N: next row), choose a strategy and sampling parameters, and run. "
        "The meter shows prompt tokens against the context window minus max_new_tokens. Compare "
        "mode (Ctrl+T) runs the same input through the strategies ticked on the Strategy tab, "
        "side by side. Every run is kept in the history (Ctrl+O). After a single run, focus the "
        "output (Tab or a click) and rate it: 1-5 stars, + / - thumbs, e edits the ideal answer."
    )
    # The rating keys are plain screen bindings: while a text box has focus it keeps its typing.
    # The footer lists the keys in this order, so the whole list is spelled out here (the
    # mixins' and Screen's keys included, inherit_bindings=False) rather than inherited in the
    # order of the classes.
    # Tabs: Ctrl+G survives every terminal and tmux (a plain control byte); Alt+1…4 does not
    # (many send ESC 1, or a character such as "¡"), so it stays as an extra only.
    BINDINGS = [
        *Screen.BINDINGS,
        *PLAYGROUND_RATING_BINDINGS,
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+t", "toggle_compare", "Compare", priority=True),
        Binding("ctrl+g", "next_tab", "Tab", priority=True),
        Binding("ctrl+f", "choose_adapter", "Adapter", priority=True),
        Binding("ctrl+b", "toggle_adapter_compare", "vs base", priority=True),
        Binding("ctrl+l", "toggle_wide", "Wide", priority=True),
        Binding("ctrl+o", "history", "History", priority=True),
        Binding("ctrl+n", "next_row", "Next row", priority=True),
        Binding("ctrl+s", "save_template", "Save", priority=True),
        Binding("alt+1", "tab('tab-template')", "Template tab", show=False),
        Binding("alt+2", "tab('tab-inputs')", "Inputs tab", show=False),
        Binding("alt+3", "tab('tab-strategy')", "Strategy tab", show=False),
        Binding("alt+4", "tab('tab-prompt')", "Prompt tab", show=False),
    ]
    DEFAULT_CSS = """
    PlaygroundScreen #pg-main { height: 1fr; }
    PlaygroundScreen #pg-left { width: 1fr; min-width: 30; }
    PlaygroundScreen #pg-right { width: 1fr; }
    PlaygroundScreen.wide #pg-left { display: none; }
    PlaygroundScreen #pg-template-row { height: 1; }
    PlaygroundScreen #pg-template-row > Label { width: auto; padding: 0 1 0 0; }
    PlaygroundScreen #template-select { width: 1fr; }
    PlaygroundScreen TabbedContent { height: 1fr; }
    PlaygroundScreen TabPane { padding: 0; }
    PlaygroundScreen #template-editor { height: 1fr; }
    PlaygroundScreen #template-error { height: auto; color: $error; }
    PlaygroundScreen .pg-field { height: 1; margin-bottom: 0; }
    PlaygroundScreen .pg-label { width: 13; color: $text-muted; }
    PlaygroundScreen .pg-field > Input, PlaygroundScreen .pg-field > Select { width: 1fr; }
    PlaygroundScreen .pg-var { height: auto; margin-bottom: 1; }
    PlaygroundScreen .pg-var > Label { color: $accent; }
    PlaygroundScreen .pg-var > TextArea { height: 4; }
    PlaygroundScreen #data-status { height: auto; color: $text-muted; margin-top: 1; }
    PlaygroundScreen #compare-kinds { height: auto; max-height: 7; border: none; }
    PlaygroundScreen .pg-heading { color: $accent; text-style: bold; margin-top: 1; }
    PlaygroundScreen #prompt-view { height: 1fr; }
    PlaygroundScreen #prompt-warnings { height: auto; color: $warning; }
    PlaygroundScreen #pg-status { height: auto; max-height: 3; color: $text-muted; }
    PlaygroundScreen #pg-status.error { color: $error; }
    PlaygroundScreen #outputs { height: 1fr; grid-size: 1; }
    PlaygroundScreen #outputs.panes-2 { grid-size: 2 1; }
    PlaygroundScreen #outputs.panes-3, PlaygroundScreen #outputs.panes-4 { grid-size: 2 2; }
    PlaygroundScreen #pg-rating.hidden { display: none; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._templates: dict[str, Any] = {}
        self._base: Any = None  # the PromptTemplate the editor started from
        self._built: Any = None
        self._generator: Any = None
        self._generator_for: Any = None
        self._cancel: threading.Event | None = None
        self._generating = False
        self._compare = False
        self._refresh_timer: Timer | None = None
        self._store: Any = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="pg-main"):
            with Vertical(id="pg-left"):
                with Horizontal(id="pg-template-row"):
                    yield Label("Template")
                    yield Select([], id="template-select", allow_blank=True, compact=True,
                                 prompt="(none)")
                with TabbedContent(id="pg-tabs", initial="tab-inputs"):
                    with TabPane("Template", id="tab-template"):
                        yield Input(placeholder="system message (optional, Jinja)",
                                    id="system-input", compact=True)
                        yield TextArea("", id="template-editor", soft_wrap=True,
                                       show_line_numbers=True, tab_behavior="indent")
                        yield Static("", id="template-error", markup=False)
                    with TabPane("Inputs", id="tab-inputs"):
                        yield InputsPanel(id="inputs-scroll")
                    with TabPane("Strategy", id="tab-strategy"):
                        yield StrategyForm()
                    with TabPane("Prompt", id="tab-prompt"):
                        yield TextArea("", id="prompt-view", read_only=True, soft_wrap=True)
                        yield Static("", id="prompt-warnings", markup=False)
            with Vertical(id="pg-right"):
                yield TokenMeter(id="meter")
                yield Static("", id="pg-status", markup=False)
                with Grid(id="outputs"):
                    yield CompletionView("output", id="out-0")
                yield RatingBar(id="pg-rating")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#pg-left").border_title = "prompt"
        self._load_template_list()
        self._restore_settings()
        self._show_model_state()

    def _load_template_list(self) -> None:
        from engine.templates import load_templates

        problems: list[TunedeckError] = []
        templates = load_templates(problems)
        for problem in problems:
            self.notify(str(problem), title="Template skipped", severity="warning", timeout=8)
        self._templates = {t.name: t for t in templates}
        select = self.query_one("#template-select", Select)
        select.set_options([(name, name) for name in self._templates])
        if self._templates:
            first = "instruction" if "instruction" in self._templates else next(
                iter(self._templates))
            select.value = first
            self._use_template(self._templates[first])

    # ------------------------------------------------------------------ the model
    def on_model_state_changed(self, message: ModelStateChanged) -> None:
        self._show_model_state()

    def _show_model_state(self) -> None:
        self._sync_adapter_title()
        state = getattr(self.app, "model_state", "idle")
        if state == "ready":
            self._set_status("")
            self._schedule_refresh(now=True)
        elif state == "error":
            self._set_status(f"Model failed to load: {self.app.model_detail}", error=True)
        else:
            self._set_status("Waiting for the model…")
            self._schedule_refresh(now=True)

    def _loaded(self) -> Any:
        if getattr(self.app, "model_state", "") != "ready":
            return None
        return getattr(self.app, "loaded", None)

    # ------------------------------------------------------------------ template and inputs
    def _use_template(self, template: Any) -> None:
        self._base = template
        self.query_one("#system-input", Input).value = template.system
        self.query_one("#template-editor", TextArea).load_text(template.template)
        sample = sample_for_template(template.name)
        path_input = self.query_one("#data-path", Input)
        if sample is not None and (not path_input.value or path_input.value == self._inputs.data_path):
            path_input.value = str(sample)
            self._load_data(str(sample))
        self._schedule_refresh(now=True)

    def current_template(self) -> Any:
        from engine.templates import PromptTemplate

        base = self._base
        return PromptTemplate(
            name=base.name if base else "untitled",
            template=self.query_one("#template-editor", TextArea).text,
            system=self.query_one("#system-input", Input).value,
            fields=list(base.fields) if base else ["instruction", "prompt", "completion"],
            description=base.description if base else "",
        )

    @on(Select.Changed, "#template-select")
    def _template_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or event.value not in self._templates:
            return
        if self._base is not None and self._base.name == event.value:
            return
        self._use_template(self._templates[event.value])

    @on(TextArea.Changed, "#template-editor")
    @on(Input.Changed, "#system-input")
    def _template_edited(self) -> None:
        self._schedule_refresh()

    @property
    def _inputs(self) -> InputsPanel:
        return self.query_one(InputsPanel)

    @property
    def _form(self) -> StrategyForm:
        return self.query_one(StrategyForm)

    @on(TextArea.Changed, ".pg-var-input")
    def _variable_edited(self) -> None:
        self._schedule_refresh()  # the panel has kept the value

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the variable boxes (from a dataset row or a history entry)."""
        self._inputs.set_values(values)
        self._schedule_refresh(now=True)

    # ------------------------------------------------------------------ dataset
    @on(Input.Submitted, "#data-path")
    def _data_path_entered(self, event: Input.Submitted) -> None:
        self._load_data(event.value.strip())

    def _load_data(self, path: str) -> None:
        if not path:
            self._inputs.clear_data("No dataset: few-shot strategies need one.")
            self._schedule_refresh()
            return
        self._inputs.show_data_status(f"Loading {path}…")
        self._load_data_worker(path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data",
          description="Loading the dataset")
    def _load_data_worker(self, path: str) -> None:
        from engine.data import load_examples

        worker = get_current_worker()
        try:
            examples = load_examples(path)
        except Exception as err:
            if not worker.is_cancelled:
                self.post_message(DatasetLoaded(path, error=describe_error(err)))
            raise  # and the screen's error path says so too
        if not worker.is_cancelled:  # a newer file has been asked for
            self.post_message(DatasetLoaded(path, examples))

    def on_dataset_loaded(self, message: DatasetLoaded) -> None:
        if message.examples is None:
            self._inputs.data_failed(message.error)
            return
        self._inputs.data_loaded(message.path, message.examples)
        self._schedule_refresh(now=True)

    @on(Input.Submitted, "#data-row")
    def _row_entered(self, event: Input.Submitted) -> None:
        try:
            row = number(event.value, "row", int, 1)
        except TunedeckError as err:
            self._inputs.show_data_status(str(err))
            return
        self.use_row(row - 1)

    def action_next_row(self) -> None:
        examples = self._inputs.examples
        if not examples:
            self.notify("Load a dataset first (Inputs tab, file).", severity="warning")
            return
        self.use_row((self._inputs.row + 1) % len(examples))

    def use_row(self, index: int) -> None:
        if self._inputs.use_row(index):
            self._schedule_refresh(now=True)

    # ------------------------------------------------------------------ strategy and params
    @on(Input.Changed, ".pg-field > Input")
    @on(Select.Changed, ".pg-field > Select")
    @on(SelectionList.SelectedChanged)
    def _settings_edited(self, event: Message) -> None:
        if getattr(event, "control", None) is not None and getattr(event.control, "id", "") in (
                "data-path", "data-row"):
            return
        self._schedule_refresh()

    def strategy(self, kind: str | None = None) -> Any:
        return self._form.strategy(kind)

    def params(self) -> Any:
        return self._form.params()

    def compare_kinds(self) -> list[str]:
        return self._form.compare_kinds()

    def set_settings(self, strategy: dict[str, Any], params: dict[str, Any]) -> None:
        """Put a recorded strategy and its parameters back into the form."""
        self._form.set_settings(strategy, params)

    # ------------------------------------------------------------------ panes, status
    def _ensure_panes(self, count: int) -> list[CompletionView]:
        grid = self.query_one("#outputs", Grid)
        panes = list(grid.query(CompletionView))
        if len(panes) != count:
            # Another mode: what the panes showed belongs to the old one (a CoT answer must not
            # appear under the zero-shot pane of a new compare).
            for pane in panes[:count]:
                pane.reset()
            self._auto_wide(count > 1)
        for pane in panes[count:]:
            pane.remove()
        for index in range(len(panes), count):
            pane = CompletionView(f"pane {index + 1}", id=f"out-{index}")
            grid.mount(pane)
            panes.append(pane)
        for size in range(1, MAX_PANES + 1):
            grid.set_class(size == count, f"panes-{size}")
        if count != 1:
            self._rate_nothing()
        self.query_one("#pg-rating", RatingBar).set_class(count != 1, "hidden")
        return panes[:count]

    # ------------------------------------------------------------------ rating
    def _rate_try(self, try_id: int) -> None:
        bar = self.query_one("#pg-rating", RatingBar)
        try:
            bar.show_try(try_id)
        except TunedeckError as err:  # the database is busy or gone: say so, keep the output
            self._rate_nothing()
            self.notify(str(err), title="Cannot rate this run", severity="warning")
            return
        bar.border_title = f"rate try #{try_id}"

    def _rate_nothing(self, why: str = "") -> None:
        bar = self.query_one("#pg-rating", RatingBar)
        bar.show(None)
        bar.border_title = why or None

    def _set_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#pg-status", Static)
        status.update(text)
        status.set_class(error, "error")

    # ------------------------------------------------------------------ other actions
    def action_toggle_compare(self) -> None:
        if self._generating:
            self.notify("Wait for the run to finish (Esc cancels).", severity="warning")
            return
        self._compare = not self._compare
        if self._compare:
            kinds = self.compare_kinds()
            panes = self._ensure_panes(max(2, min(len(kinds), MAX_PANES)))
            for pane, kind in zip(panes, kinds, strict=False):
                pane.set_title(kind)
            self._set_status(f"Compare mode: {', '.join(kinds)}. Ctrl+R runs them all; "
                             "tick strategies on the Strategy tab.")
        else:
            self._ensure_panes(1)[0].set_title("output")
            self._set_status("Single mode.")

    def action_save_template(self) -> None:
        from engine.templates import TemplateError, is_builtin, save_template

        bar = self.query_one("#pg-rating", RatingBar)
        if bar.editing:
            # Ctrl+S is a priority binding here, so it reaches the screen before the bar's own
            # "save the ideal answer" binding: hand it over.
            bar.action_save_ideal()
            return
        template = self.current_template()
        if is_builtin(template.name) and self._base is not None and (
                template.template != self._base.template or template.system != self._base.system):
            template = replace(template, name=f"{template.name}-custom")
        try:
            template.variables()
            path = save_template(template)
        except TemplateError as err:
            self.notify(template_error_text(err), title="Not saved", severity="error")
            return
        except (TunedeckError, OSError) as err:
            self.notify(describe_error(err), title="Not saved", severity="error")
            return
        self._templates[template.name] = template
        self._base = template
        select = self.query_one("#template-select", Select)
        with select.prevent(Select.Changed):
            select.set_options([(name, name) for name in self._templates])
            select.value = template.name
        self.notify(f"Saved template '{template.name}' to {path}.", title="Template saved")

    def action_history(self) -> None:
        from tui.screens.history import HistoryScreen

        self.app.push_screen(HistoryScreen(), self._restore_try)

    def _restore_try(self, entry: Any) -> None:
        """Put a try from the history back into the playground."""
        if entry is None:
            return
        if entry.template in self._templates:
            select = self.query_one("#template-select", Select)
            with select.prevent(Select.Changed):
                select.value = entry.template
            self._base = self._templates[entry.template]
        inputs = dict(entry.inputs or {})
        system = inputs.pop("system", None)
        self.query_one("#template-editor", TextArea).load_text(entry.template_text)
        if system is not None or self._base is not None:
            self.query_one("#system-input", Input).value = (
                system if system is not None else self._base.system)
        self.set_settings(entry.strategy or {}, entry.params or {})
        self._inputs.values.update({k: str(v) for k, v in inputs.items()})
        self.refresh_prompt()
        self.set_values(inputs)
        panes = self._ensure_panes(1)
        self._compare = False
        panes[0].set_title(f"history #{entry.id}")
        panes[0].set_text(entry.output)
        panes[0].finish(stored_metrics(entry.metrics or {}))
        self._rate_try(entry.id)
        self._set_status(f"Restored try #{entry.id}. Ctrl+R runs it again.")

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self._store is not None:
            self._store.close()

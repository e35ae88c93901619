"""Playground: edit a prompt template, fill its variables, pick a strategy and watch it generate.

The left column holds four tabs (template, inputs, strategy, rendered prompt); the right column
the live token meter and the output, one pane per strategy in compare mode. Generation runs in a
thread worker that streams coalesced `CompletionUpdate` messages and checks a cancel event
before every token. Every finished run is recorded in the history store; in single-run mode the
rating bar under the output then points at that try, so the Rate screen's keys (1-5, + / -, e)
rate it in place.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
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
from textual.worker import Worker, WorkerState, get_current_worker

from engine.errors import TunedeckError
from tui.messages import ModelStateChanged
from tui.screens.adapter_picker import AdapterControls
from tui.screens.base import WorkbenchScreen, describe_error
from tui.screens.playground_modes import PlaygroundModes
from tui.widgets.completion_view import CompletionUpdate, CompletionView, metrics_line
from tui.widgets.rating_bar import RATING_BINDINGS, RatingBar, RatingKeys
from tui.widgets.token_meter import TokenMeter

KINDS = ("zero-shot", "few-shot", "cot", "few-shot-cot", "self-consistency")
SELECTIONS = ("first", "random", "similar")
MAX_PANES = 4
DEFAULT_COMPARE = ("zero-shot", "few-shot", "cot")
REFRESH_DELAY = 0.25  # seconds of quiet typing before the prompt is re-rendered and counted


@dataclass
class RunJob:
    """One strategy's prompt, ready for the worker (built on the UI thread)."""

    slot: int
    label: str
    strategy: Any  # engine.strategies.StrategyConfig
    built: Any  # engine.strategies.BuiltPrompt (None when it could not be built)
    error: str = ""
    generator: Any = None  # base vs adapter: this job's own engine.adapters.AdapterGenerator


@dataclass
class JobDone(Message):
    slot: int
    metrics: str
    answer: str | None = None
    failed: bool = False
    try_id: int | None = None  # the history row of this run (None: it could not be recorded)


def parse_stops(text: str) -> list[str]:
    """`\\n\\n|Question:` → ["\\n\\n", "Question:"]: `|` separates, `\\n` and `\\t` escape."""
    stops = []
    for part in text.split("|"):
        part = part.replace("\\n", "\n").replace("\\t", "\t")
        if part.strip("\n\t") or part:
            stops.append(part)
    return [s for s in stops if s]


def _number(raw: str, name: str, kind: type, default: Any) -> Any:
    raw = raw.strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise TunedeckError(f"{name}: '{raw}' is not {noun}.") from None


def sample_for_template(name: str) -> Path | None:
    """The shipped sample dataset a built-in template was written for, if any."""
    from engine.data import SAMPLE_NAMES, sample_path

    for sample in SAMPLE_NAMES:
        if name.startswith(sample.replace("_", "-")):
            path = Path(sample_path(sample))
            return path if path.exists() else None
    return None


def _field(label: str, widget: Any, field_id: str) -> Horizontal:
    return Horizontal(Label(label, classes="pg-label"), widget, classes="pg-field",
                      id=f"field-{field_id}")


# The footer is full of the Playground's own keys: "e" (edit the ideal answer) is listed in the
# rating bar's hint line instead.
PLAYGROUND_RATING_BINDINGS = [replace(b, show=False) for b in RATING_BINDINGS]


class PlaygroundScreen(RatingKeys, PlaygroundModes, AdapterControls, WorkbenchScreen,
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
        self._values: dict[str, str] = {}
        self._variables: list[str] = []
        self._examples: list[Any] = []
        self._data_path: str = ""
        self._row: int = -1
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
                    with TabPane("Inputs", id="tab-inputs"), VerticalScroll(id="inputs-scroll"):
                        yield Vertical(id="variables")
                        yield Static("Dataset (few-shot examples, rows)", classes="pg-heading")
                        yield _field("file", Input(placeholder="path to JSONL/CSV/Parquet",
                                                   id="data-path", compact=True), "data-path")
                        yield _field("row", Input(placeholder="row number, Enter loads",
                                                  id="data-row", compact=True), "data-row")
                        yield Static("", id="data-status", markup=False)
                    with TabPane("Strategy", id="tab-strategy"), VerticalScroll():
                        yield _field("strategy", Select([(k, k) for k in KINDS],
                                                        value="zero-shot", allow_blank=False,
                                                        id="strategy-kind", compact=True), "kind")
                        yield _field("k examples", Input("3", id="strategy-k", compact=True),
                                     "k")
                        yield _field("selection", Select([(s, s) for s in SELECTIONS],
                                                         value="first", allow_blank=False,
                                                         id="strategy-selection", compact=True),
                                     "selection")
                        yield _field("samples", Input("5", id="strategy-samples", compact=True),
                                     "samples")
                        yield _field("CoT trigger", Input("Let's think step by step.",
                                                          id="strategy-trigger", compact=True),
                                     "trigger")
                        yield Static("Sampling", classes="pg-heading")
                        yield _field("temperature", Input("0", id="param-temperature",
                                                          compact=True), "temperature")
                        yield _field("top_p", Input("1.0", id="param-top-p", compact=True),
                                     "top-p")
                        yield _field("top_k", Input("0", id="param-top-k", compact=True),
                                     "top-k")
                        yield _field("max tokens", Input("256", id="param-max-new",
                                                         compact=True), "max-new")
                        yield _field("rep. penalty", Input("1.0", id="param-rep",
                                                           compact=True), "rep")
                        yield _field("seed", Input("", placeholder="none", id="param-seed",
                                                   compact=True), "seed")
                        yield _field("stop", Input("", placeholder="a|b, \\n = newline",
                                                   id="param-stop", compact=True), "stop")
                        yield Static("Compare (Ctrl+T): 2–4 strategies", classes="pg-heading")
                        yield SelectionList(*[(k, k, k in DEFAULT_COMPARE) for k in KINDS],
                                            id="compare-kinds")
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

    def _get_generator(self, loaded: Any) -> Any:
        from engine.generation import Generator

        if self._generator is None or self._generator_for is not loaded:
            self._generator = Generator(loaded.model, loaded.tokenizer)
            self._generator_for = loaded
        return self._generator

    # ------------------------------------------------------------------ template and inputs
    def _use_template(self, template: Any) -> None:
        self._base = template
        self.query_one("#system-input", Input).value = template.system
        self.query_one("#template-editor", TextArea).load_text(template.template)
        sample = sample_for_template(template.name)
        path_input = self.query_one("#data-path", Input)
        if sample is not None and (not path_input.value or path_input.value == self._data_path):
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

    def _sync_variables(self, names: list[str]) -> None:
        """One text box per template variable, in template order; values survive edits."""
        if names == self._variables:
            return
        box = self.query_one("#variables", Vertical)
        for name in self._variables:
            if name not in names:
                for widget in box.query(f"#var-box-{name}"):
                    widget.remove()
        for index, name in enumerate(names):
            if name in self._variables:
                continue
            area = TextArea(self._values.get(name, ""), id=f"var-{name}", soft_wrap=True,
                            classes="pg-var-input")
            widget = Vertical(Label(name), area, classes="pg-var", id=f"var-box-{name}")
            before = next((n for n in names[index + 1:] if n in self._variables), None)
            if before is not None:
                box.mount(widget, before=f"#var-box-{before}")
            else:
                box.mount(widget)
        self._variables = list(names)

    @on(TextArea.Changed, ".pg-var-input")
    def _variable_edited(self, event: TextArea.Changed) -> None:
        name = (event.text_area.id or "").removeprefix("var-")
        self._values[name] = event.text_area.text
        self._schedule_refresh()

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the variable boxes (from a dataset row or a history entry)."""
        for name, value in values.items():
            text = "" if value is None else str(value)
            self._values[name] = text
            if name not in self._variables:
                continue
            for area in self.query(f"#var-{name}").results(TextArea):
                area.load_text(text)
        self._schedule_refresh(now=True)

    # ------------------------------------------------------------------ dataset
    @on(Input.Submitted, "#data-path")
    def _data_path_entered(self, event: Input.Submitted) -> None:
        self._load_data(event.value.strip())

    def _load_data(self, path: str) -> None:
        if not path:
            self._examples = []
            self._data_path = ""
            self._show_data_status("No dataset: few-shot strategies need one.")
            self._schedule_refresh()
            return
        self._show_data_status(f"Loading {path}…")
        self._load_data_worker(path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data",
          description="Loading the dataset")
    def _load_data_worker(self, path: str) -> tuple[str, list[Any]]:
        from engine.data import load_examples

        return path, load_examples(path)

    def _data_loaded(self, path: str, examples: list[Any]) -> None:
        self._data_path = path
        self._examples = examples
        self._row = -1
        self._show_data_status(f"{len(examples):,} rows from {Path(path).name}. "
                               "Ctrl+N loads the next row into the inputs.")
        self._schedule_refresh(now=True)

    def _show_data_status(self, text: str) -> None:
        self.query_one("#data-status", Static).update(text)

    @on(Input.Submitted, "#data-row")
    def _row_entered(self, event: Input.Submitted) -> None:
        try:
            row = _number(event.value, "row", int, 1)
        except TunedeckError as err:
            self._show_data_status(str(err))
            return
        self.use_row(row - 1)

    def action_next_row(self) -> None:
        if not self._examples:
            self.notify("Load a dataset first (Inputs tab, file).", severity="warning")
            return
        self.use_row((self._row + 1) % len(self._examples))

    def use_row(self, index: int) -> None:
        from engine.strategies import example_values

        if not self._examples:
            self._show_data_status("Load a dataset first.")
            return
        if not 0 <= index < len(self._examples):
            self._show_data_status(f"Row {index + 1} is out of range: the dataset has "
                                   f"{len(self._examples):,} rows.")
            return
        self._row = index
        example = self._examples[index]
        values = example_values(example)
        self.set_values({name: values.get(name, "") for name in self._variables})
        self.query_one("#data-row", Input).value = str(index + 1)
        reference = getattr(example, "completion", "") or ""
        self._show_data_status(f"Row {index + 1} of {len(self._examples):,} "
                               f"(line {getattr(example, 'line', '?')}); "
                               f"reference: {reference[:120]}")

    def _few_shot_pool(self) -> list[Any]:
        """The dataset minus the row being asked, so it is never its own example."""
        if 0 <= self._row < len(self._examples):
            return self._examples[: self._row] + self._examples[self._row + 1:]
        return self._examples

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
        from engine.strategies import StrategyConfig

        return StrategyConfig(
            kind=kind or str(self.query_one("#strategy-kind", Select).value),
            k=_number(self.query_one("#strategy-k", Input).value, "k examples", int, 3),
            selection=str(self.query_one("#strategy-selection", Select).value),
            samples=_number(self.query_one("#strategy-samples", Input).value, "samples", int, 5),
            cot_trigger=self.query_one("#strategy-trigger", Input).value
            or "Let's think step by step.",
        )

    def params(self) -> Any:
        from engine.generation import GenerationParams

        def value(widget_id: str) -> str:
            return self.query_one(widget_id, Input).value

        seed = value("#param-seed").strip()
        params = GenerationParams(
            temperature=_number(value("#param-temperature"), "temperature", float, 0.0),
            top_p=_number(value("#param-top-p"), "top_p", float, 1.0),
            top_k=_number(value("#param-top-k"), "top_k", int, 0),
            max_new_tokens=_number(value("#param-max-new"), "max tokens", int, 256),
            repetition_penalty=_number(value("#param-rep"), "rep. penalty", float, 1.0),
            seed=_number(seed, "seed", int, None) if seed else None,
            stop=parse_stops(value("#param-stop")),
        )
        params.validate()
        return params

    def compare_kinds(self) -> list[str]:
        chosen = self.query_one("#compare-kinds", SelectionList).selected
        return [k for k in KINDS if k in chosen]

    def set_settings(self, strategy: dict[str, Any], params: dict[str, Any]) -> None:
        """Put a recorded strategy and its parameters back into the form."""
        if strategy.get("kind") in KINDS:
            self.query_one("#strategy-kind", Select).value = strategy["kind"]
        if strategy.get("selection") in SELECTIONS:
            self.query_one("#strategy-selection", Select).value = strategy["selection"]
        fields = {"#strategy-k": strategy.get("k"), "#strategy-samples": strategy.get("samples"),
                  "#strategy-trigger": strategy.get("cot_trigger"),
                  "#param-temperature": params.get("temperature"),
                  "#param-top-p": params.get("top_p"), "#param-top-k": params.get("top_k"),
                  "#param-max-new": params.get("max_new_tokens"),
                  "#param-rep": params.get("repetition_penalty"),
                  "#param-seed": params.get("seed"),
                  "#param-stop": "|".join(s.replace("\n", "\\n").replace("\t", "\\t")
                                          for s in params.get("stop") or [])}
        for widget_id, value in fields.items():
            if value is not None:
                self.query_one(widget_id, Input).value = str(value)

    # ------------------------------------------------------------------ rendered prompt + meter
    def _schedule_refresh(self, now: bool = False) -> None:
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        if now:
            self._refresh_timer = None
            self.call_after_refresh(self.refresh_prompt)
        else:
            self._refresh_timer = self.set_timer(REFRESH_DELAY, self.refresh_prompt)

    def refresh_prompt(self, ready: Any = None) -> None:
        """Re-render the prompt and count it, in a worker: a slow template never holds the UI.

        `ready`: the BuiltPrompt of the current template, values and strategy when the caller
        has just built it (a run), so it is shown at once without being built again.
        """
        from engine.templates import TemplateError

        self._refresh_timer = None
        self._built = None
        template = self.current_template()
        try:
            names = template.variables()
        except TemplateError as err:
            self.query_one("#template-error", Static).update(_template_error_text(err))
            self.query_one("#meter", TokenMeter).clear("template error")
            return
        self.query_one("#template-error", Static).update("")
        self._sync_variables(names)
        values = {name: self._values.get(name, "") for name in names}
        loaded = self._loaded()
        if ready is not None:
            self._show_prompt(ready)
            return
        try:  # the form is read here, on the UI thread; the worker only renders
            build = None if loaded is None else self._builder(template, values, self.strategy(),
                                                              loaded)
        except TunedeckError as err:
            self._show_prompt(err)
            return
        self._render_worker(template, values, build)

    @work(thread=True, exclusive=True, exit_on_error=False, group="prompt",
          description="Rendering the prompt")
    def _render_worker(self, template: Any, values: dict, build: Any) -> None:
        from engine.templates import render_text

        try:
            result = build() if build is not None else render_text(template, values)
        except TunedeckError as err:
            result = err
        self.app.call_from_thread(self._show_prompt, result, get_current_worker())

    def _show_prompt(self, result: Any, worker: Any = None) -> None:
        """Show a BuiltPrompt, the rendered text (no model yet), or why there is neither."""
        from engine.templates import TemplateError

        if worker is not None and worker.is_cancelled:  # a newer render has been asked for
            return
        meter = self.query_one("#meter", TokenMeter)
        warnings = self.query_one("#prompt-warnings", Static)
        if isinstance(result, TemplateError):
            self.query_one("#template-error", Static).update(_template_error_text(result))
            warnings.update(_template_error_text(result))
            meter.clear("template error")
            return
        if isinstance(result, TunedeckError):
            warnings.update(str(result))
            meter.clear("cannot build the prompt")
            return
        view = self.query_one("#prompt-view", TextArea)
        if isinstance(result, str):
            view.load_text(result)
            warnings.update("")
            meter.clear("no model yet: tokens are counted once it is loaded")
            return
        self._built = result
        view.load_text(result.text)
        warnings.update("\n".join(result.warnings))
        note = f"{result.examples_used} examples" if result.examples_used else ""
        meter.set_budget(result.budget.used, result.budget.available, result.budget.window,
                         note)

    def _build(self, template: Any, values: dict, strategy: Any, loaded: Any) -> Any:
        return self._builder(template, values, strategy, loaded)()

    def _builder(self, template: Any, values: dict, strategy: Any, loaded: Any) -> Any:
        """Building the prompt as a call that any thread may make: the form is read now."""
        from engine.strategies import build_prompt

        examples = self._few_shot_pool() if strategy.uses_examples else ()
        max_new_tokens = self.params().max_new_tokens
        return lambda: build_prompt(template, values, loaded.tokenizer, strategy,
                                    examples=examples, max_new_tokens=max_new_tokens,
                                    context_window=loaded.info.context_window)

    # ------------------------------------------------------------------ run / cancel
    def action_run(self) -> None:
        if self._generating:
            self.notify("Already generating: Esc cancels.", severity="warning")
            return
        loaded = self._loaded()
        if loaded is None:
            self.notify("The model is not ready yet.", severity="warning")
            return
        try:
            template = self.current_template()
            # The template's own variables, as refresh_prompt reads them: the prompt shown is
            # then the one that runs, even before a pending refresh has added a new variable.
            values = {name: self._values.get(name, "") for name in template.variables()}
            params = self.params()
            kinds = self.compare_kinds() if self._compare else [self.strategy().kind]
            if self._compare and not 2 <= len(kinds) <= MAX_PANES:
                raise TunedeckError(f"Compare runs 2–{MAX_PANES} strategies; {len(kinds)} are "
                                    "ticked on the Strategy tab.")
            jobs = []
            for slot, kind in enumerate(kinds):
                strat = self.strategy(kind)
                try:
                    jobs.append(RunJob(slot, kind, strat,
                                       self._build(template, values, strat, loaded)))
                except TunedeckError as err:
                    if not self._compare:
                        raise
                    # One strategy that cannot be built (few-shot without a dataset) does not
                    # keep the others from running: its pane says why.
                    jobs.append(RunJob(slot, kind, strat, None, error=str(err)))
            if all(job.error for job in jobs):
                raise TunedeckError(jobs[0].error)
            jobs = self.adapter_jobs(jobs, loaded)
            shown = self.strategy()  # the strategy the Prompt tab and the meter show
        except TunedeckError as err:
            self._set_status(str(err), error=True)
            self.notify(str(err), title="Cannot run", severity="error")
            return
        if self._refresh_timer is not None:  # typed just before Ctrl+R: shown below already
            self._refresh_timer.stop()
        self.refresh_prompt(next((job.built for job in jobs
                                  if job.built is not None and job.strategy == shown), None))
        panes = self._ensure_panes(len(jobs))
        self._rate_nothing("generating…")  # the previous output is being replaced
        for job, pane in zip(jobs, panes, strict=True):
            pane.start(self._pane_title(job))
            if job.error:
                pane.set_text(job.error)
                pane.finish("not run", failed=True)
        self._cancel = threading.Event()
        self._generating = True
        self.refresh_bindings()
        self.save_settings()
        self._set_status("Generating… Esc cancels.")
        generator, adapter = self._adapter_generator(loaded)
        context = {
            "template": template, "values": values, "params": params,
            "model": getattr(loaded.info, "name", "model"), "adapter": adapter,
        }
        self._generate_worker(generator, jobs, context, self._cancel)

    def _adapter_generator(self, loaded: Any) -> tuple[Any, str | None]:
        """The generator bound to the adapter active on the model (if any), and its reference."""
        from engine import adapters

        generator = self._get_generator(loaded)
        extras = getattr(loaded, "extras", None) or {}
        if extras.get(adapters.EXTRAS_KEY) is None:
            return generator, None
        return adapters.AdapterSet.of(loaded).bind(generator), adapters.active_ref(loaded)

    def _pane_title(self, job: RunJob) -> str:
        if job.generator is not None:
            # Base vs adapter: which model first, so a narrow pane still tells the two apart.
            return f"{job.generator.label} · {job.strategy.kind}"
        if not self._compare:
            return f"output · {job.label}"
        return job.label

    def action_cancel(self) -> None:
        if self._generating and self._cancel is not None:
            self._cancel.set()
            self._set_status("Cancelling…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            # Shown (dimmed) while idle so the footer always lists it.
            return True if self._generating else None
        return True

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate",
          description="Generating")
    def _generate_worker(self, generator: Any, jobs: list[RunJob], context: dict,
                         cancel: threading.Event) -> str:
        from engine.strategies import extract_answer, majority_vote

        params = context["params"]
        for job in jobs:
            if job.error:
                continue
            if cancel.is_set():
                self.post_message(JobDone(job.slot, "cancelled before it started"))
                continue
            texts: list[str] = []
            answers: list[str | None] = []
            results: list[Any] = []
            runs = job.strategy.samples if job.strategy.kind == "self-consistency" else 1
            for index in range(runs):
                run_params = params
                prefix = ""
                if runs > 1:
                    # Self-consistency needs different samples: sampling on, one seed each.
                    run_params = replace(params, temperature=params.temperature or 0.7,
                                         seed=(params.seed or 0) + index)
                    prefix = "".join(f"── sample {i + 1} ──\n{t}\n" for i, t in
                                     enumerate(texts)) + f"── sample {index + 1} ──\n"
                shown: list[str] = []

                def on_text(delta: str, shown: list[str] = shown, prefix: str = prefix,
                            slot: int = job.slot) -> None:
                    shown.append(delta)
                    self.post_message(CompletionUpdate(slot, prefix + "".join(shown)))

                result = (job.generator or generator).generate(
                    job.built.input_ids, run_params, on_text=on_text, cancel=cancel,
                    prefix_len=job.built.prefix_len)
                results.append(result)
                texts.append(result.text)
                if job.strategy.chain_of_thought:
                    answers.append(extract_answer(result.text, job.strategy.answer_pattern))
                if result.stop_reason == "cancelled":
                    break
            answer = None
            if runs > 1:
                voted, agreement = majority_vote(answers)
                answer = f"answer: {voted or '—'} · agreement {agreement:.0%} of {len(answers)}"
            elif answers:
                answer = f"answer: {answers[0] or '—'}"
            metrics = metrics_line(results[-1])
            if runs > 1:
                total = sum(r.completion_tokens for r in results)
                metrics = f"{len(results)} samples · {total:,} tokens · last: {metrics}"
            try_id = None
            try:
                try_id = self._record(job, context, texts, results, answer)
            except Exception as err:  # the run is still shown; only its record is missing
                self.app.call_from_thread(self.notify, describe_error(err),
                                          title="Not recorded in the history",
                                          severity="warning")
            self.post_message(JobDone(job.slot, metrics, answer, try_id=try_id))
        return "cancelled" if cancel.is_set() else "done"

    def _record(self, job: RunJob, context: dict, texts: list[str], results: list[Any],
                answer: str | None) -> int:
        """Write the run to the history; returns its try id."""
        from engine.store import Store

        if self._store is None:
            self._store = Store()
        last = results[-1]
        metrics = last.metrics()
        if len(results) > 1:
            metrics.update(samples=len(results),
                           completion_tokens=sum(r.completion_tokens for r in results),
                           total_s=sum(r.total_s for r in results))
        if answer:
            metrics["answer"] = answer
        output = texts[0] if len(texts) == 1 else "\n\n".join(
            f"── sample {i + 1} ──\n{t}" for i, t in enumerate(texts))
        template = context["template"]
        return self._store.add_try(
            model=context["model"], template=template.name,
            adapter=job.generator.adapter_ref if job.generator else context["adapter"],
            template_text=template.template, strategy=job.strategy.as_dict(),
            params=context["params"].as_dict(),
            inputs={**context["values"], "system": template.system} if template.system
            else dict(context["values"]),
            prompt_text=job.built.text, output=output, metrics=metrics)

    def on_completion_update(self, message: CompletionUpdate) -> None:
        panes = list(self.query(CompletionView))
        if message.slot < len(panes):
            panes[message.slot].set_text(message.text)

    def on_job_done(self, message: JobDone) -> None:
        panes = list(self.query(CompletionView))
        if message.slot < len(panes):
            panes[message.slot].finish(message.metrics, failed=message.failed)
            panes[message.slot].set_answer(message.answer)
        # Only a single output is rated here: in compare mode the bar could not say which
        # pane it means (the Rate screen's queue holds every pane's try).
        if len(panes) == 1 and message.try_id is not None:
            self._rate_try(message.try_id)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "data":
            if event.state == WorkerState.SUCCESS:
                path, examples = worker.result
                self._data_loaded(path, examples)
            elif event.state == WorkerState.ERROR:
                self._examples = []
                self._show_data_status(describe_error(worker.error))
            return
        if worker.group != "generate" or event.state not in (
                WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self._generating = False
        self.refresh_bindings()
        if event.state == WorkerState.SUCCESS:
            cancelled = worker.result == "cancelled"
            self._set_status("Cancelled." if cancelled else "Done. Ctrl+O shows the history.")
        for pane in self.query(CompletionView).filter(".running"):
            pane.finish("cancelled" if event.state != WorkerState.ERROR else "failed",
                        failed=event.state == WorkerState.ERROR)

    def worker_failed(self, worker: Worker, message: str) -> None:
        super().worker_failed(worker, message)
        if worker.group == "generate":
            self._set_status(message, error=True)

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
            self.notify(_template_error_text(err), title="Not saved", severity="error")
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
        self._values.update({k: str(v) for k, v in inputs.items()})
        self.refresh_prompt()
        self.set_values(inputs)
        panes = self._ensure_panes(1)
        self._compare = False
        panes[0].set_title(f"history #{entry.id}")
        panes[0].set_text(entry.output)
        panes[0].finish(_stored_metrics(entry.metrics or {}))
        self._rate_try(entry.id)
        self._set_status(f"Restored try #{entry.id}. Ctrl+R runs it again.")

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self._store is not None:
            self._store.close()


def _template_error_text(err: Any) -> str:
    where = []
    if getattr(err, "line", None):
        where.append(f"line {err.line}")
    if getattr(err, "column", None):
        where.append(f"column {err.column}")
    message = getattr(err, "message", None) or str(err)
    return f"{', '.join(where)}: {message}" if where else message


def _stored_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    if "ttft_s" in metrics:
        parts.append(f"TTFT {metrics['ttft_s']:.2f} s")
    if "tokens_per_s" in metrics:
        parts.append(f"{metrics['tokens_per_s']:.1f} tok/s")
    if "prompt_tokens" in metrics:
        parts.append(f"{metrics['prompt_tokens']:,} → {metrics.get('completion_tokens', 0):,} "
                     "tokens")
    if "stop_reason" in metrics:
        parts.append(str(metrics["stop_reason"]))
    return " · ".join(parts) or "recorded"

"""Train: a config form (prefilled from the defaults fitted to the model and dataset, or from an
example config), the pre-flight panel, and the launch key. Launching starts a detached runner
and opens its live view; the run goes on when the view or the app closes.

Pre-flight and launch run in one thread worker group ("train"): pre-flight loads the tokenizer
and the model, and `launch` is kept off the UI thread too; a launch runs the pre-flight once (a
passing check of the same config is not repeated, and `launch` does not check again). Fitting
the form to the data (`engine.training.suggest`) runs in its own group ("fit"): on opening, when
the model or dataset field is changed, and on Ctrl+G. Workers post their results as typed
messages (`tui.messages.SettingsFitted` / `FitFailed`, `PreflightDone`); a pre-flight's
errors reach `worker_failed`. A field the user has edited keeps its value unless Ctrl+G asks.
`engine.training.*` is imported inside the functions, so opening this screen never pulls in
torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.events import DescendantFocus, Resize
from textual.widgets import Footer, Header, Input, Label, Select, Static
from textual.worker import Worker, get_current_worker

from engine.errors import TunedeckError
from tui.messages import FitFailed, LoadProgress, PreflightDone, SettingsFitted
from tui.screens.base import WorkbenchScreen, describe_error
from tui.screens.run_view import RunViewScreen
from tui.widgets.launch_fields import launch_choices, launch_options
from tui.widgets.preflight_report import report_content

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # engine.training.config.PRECISIONS
WIDE_COLUMNS, NARROW_COLUMNS = 110, 72  # terminal widths where the columns change shares
LAST_RUN_FILE = "last-train-run"  # in the data home: the run Ctrl+O opens, across restarts


def form_methods() -> tuple[str, ...]:
    """The methods the form offers: the supervised ones of the config (auto: qlora on CUDA,
    lora elsewhere); preference training needs a preference dataset and starts from a config."""
    from engine.training.config import SFT_METHODS

    return SFT_METHODS


@dataclass(frozen=True)
class Field:
    name: str  # TrainConfig attribute
    label: str
    kind: type = str
    optional: bool = False  # blank means "not set" (None)


FIELDS = (
    Field("name", "run name"),
    Field("model", "model"),
    Field("dataset", "dataset"),
    Field("lora_r", "LoRA r", int),
    Field("lora_alpha", "LoRA alpha", int),
    Field("learning_rate", "learning rate", float),
    Field("epochs", "epochs", float),
    Field("max_steps", "max steps", int),
    Field("batch_size", "batch size", int),
    Field("max_seq_len", "max seq len", int),
    Field("limit", "train rows", int, optional=True),
    Field("eval_every", "eval every", int),
    # Each evaluation reads the whole eval set: on a CPU that can cost more than the steps.
    Field("eval_limit", "eval rows", int, optional=True),
    Field("sample_every", "sample every", int),
    Field("save_every", "save every", int),
)


def field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_field(field: Field, text: str) -> Any:
    text = text.strip()
    if field.kind is str:
        return text
    if not text and field.optional:
        return None
    if not text:
        raise TunedeckError(f"{field.label} ({field.name}): give a number.")
    try:
        return int(text) if field.kind is int else float(text)
    except ValueError:
        kind = "a whole number" if field.kind is int else "a number"
        raise TunedeckError(f"{field.label} ({field.name}): {text!r} is not {kind}.") from None


def example_summary(path: Any, config: Any) -> str:
    """What choosing an example config did, including the settings the form does not show."""
    from pathlib import Path

    lines = [f"Example {Path(str(path)).stem}: {config.method} on {config.dataset}."]
    if config.limit:
        lines.append(f"limit {config.limit}: only the first {config.limit} training rows are "
                     "used (train rows).")
    if config.eval_limit:
        lines.append(f"eval_limit {config.eval_limit}: each evaluation reads the first "
                     f"{config.eval_limit} rows (eval rows).")
    lines.append("Ctrl+G fits the cadence to the data; Ctrl+T shows steps and time.")
    return "\n".join(lines)


def _last_run_path() -> Any:
    from engine import paths

    return paths.home() / LAST_RUN_FILE


def remember_run(run: Any) -> str:
    """Keep the id of the run launched from here for Ctrl+O after a restart; "" or a problem."""
    from engine import paths
    from engine.training.rundir import atomic_write_text

    try:
        paths.ensure_dir(paths.home())
        atomic_write_text(_last_run_path(), run.id + "\n")
    except OSError as err:
        return (f"tunedeck: {_last_run_path()}: {err.strerror or err}; Ctrl+O will not find "
                f"{run.id} after a restart (F5 lists every run).")
    return ""


def remembered_run() -> Any:
    """The run last launched from the Train screen (this or an earlier session), if it exists."""
    from engine import paths
    from engine.training.rundir import RunDir

    try:
        run_id = _last_run_path().read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not run_id or "/" in run_id or run_id.startswith("."):
        return None
    folder = paths.runs_dir() / run_id
    return RunDir(folder) if folder.is_dir() else None


class TrainScreen(WorkbenchScreen):
    HELP_TITLE = "Train"
    HELP = ("Set up a fine-tune: pick an example config (or the defaults), adjust the form, "
            "Ctrl+G fits length limit, epochs, learning rate and the eval / sample / save "
            "cadence to the model and dataset (done on its own when the screen opens or the "
            "model or dataset field changes, sparing fields you edited), Ctrl+T checks it (tokens with trained / masked labels, memory, steps, time) and "
            "Ctrl+L launches it after a passing check. The run is a separate process: closing "
            "its view or the app leaves it running; F5 (Runs) lists every run.")
    BINDINGS = [
        Binding("ctrl+t", "preflight", "Pre-flight"),
        Binding("ctrl+l", "launch", "Launch"),
        Binding("ctrl+o", "open_last", "Last run"),
        Binding("ctrl+g", "fit", "Fit to data"),
    ]
    DEFAULT_CSS = """
    TrainScreen #train-body { height: 1fr; }
    TrainScreen #train-form { width: 42; border: round $panel-lighten-2; padding: 0 1; }
    TrainScreen #train-form:focus-within { border: round $primary; }
    TrainScreen .form-row { height: 1; margin-bottom: 0; }
    TrainScreen .form-row > Label { width: 14; color: $text-muted; }
    TrainScreen .form-row > Input, TrainScreen .form-row > Select { width: 1fr; }
    TrainScreen #preflight { width: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    TrainScreen #preflight-status { height: auto; color: $text-muted; }
    TrainScreen #field-help { height: auto; color: $accent; margin-bottom: 1; }
    TrainScreen #field-help.empty { display: none; }
    TrainScreen #preflight-report { height: auto; }
    TrainScreen #preflight-report.error { color: $error; }
    /* Set on resize: the config column takes its share of a wide terminal, and on a narrow one
       both columns get half, so neither is squeezed to a sliver. */
    TrainScreen.wide #train-form { width: 40%; max-width: 72; }
    TrainScreen.narrow #train-form { width: 50%; }
    TrainScreen.narrow .form-row > Label { width: 13; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.base: Any = None  # the TrainConfig the form starts from (defaults or an example)
        self.report: Any = None  # the last PreflightReport
        self._report_for: dict[str, Any] | None = None  # config dict the report was made for
        self.last_run: Any = None  # RunDir of the run launched from here
        self._fitted_for: tuple[str, str] | None = None  # (model, dataset) last fitted to
        self._panel_has_check = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-form"):
                with Horizontal(classes="form-row"):
                    yield Label("example")
                    yield Select([], prompt="defaults", id="example", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("method")
                    yield Select([(m, m) for m in form_methods()], allow_blank=False,
                                 value="qlora", id="field-method", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("precision")
                    yield Select([(p, p) for p in PRECISIONS], allow_blank=False, value="auto",
                                 id="field-precision", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("processes")
                    yield Select(launch_choices(), allow_blank=False, value="",
                                 id="launch-config", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("process count")
                    yield Input(id="launch-processes", compact=True, select_on_focus=False,
                                placeholder="from the config")
                for field in FIELDS:
                    with Horizontal(classes="form-row"):
                        yield Label(field.label)
                        yield Input(id=f"field-{field.name}", compact=True,
                                    select_on_focus=False)
            with VerticalScroll(id="preflight"):
                yield Static("", id="field-help", classes="empty")
                yield Static("Ctrl+T checks the config before a launch: the token view of one "
                             "example, memory, steps and time. Ctrl+L checks, then launches.",
                             id="preflight-status")
                yield Static("", id="preflight-report")
        yield Footer()

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        """The focused setting's meaning, for the method the form trains (the recipe's own
        where it differs: batch size is completions in GRPO, rated rows in DPO)."""
        self.show_field_help(event.widget.id or "")

    @on(Select.Changed, "#field-method")
    def _method_changed(self) -> None:
        focused = self.focused
        self.show_field_help(focused.id if focused is not None and focused.id else "")

    def show_field_help(self, widget_id: str) -> None:
        from engine.training.recipes import field_help

        name = widget_id.removeprefix("field-") if widget_id.startswith("field-") else ""
        method = self.query_one("#field-method", Select).value
        text = field_help(str(method), name) if name else ""
        label = next((f.label for f in FIELDS if f.name == name), name)
        box = self.query_one("#field-help", Static)
        box.update(Content.assemble((label, "bold"), " — ", text) if text else "")
        box.set_class(not text, "empty")

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE_COLUMNS, "wide")
        self.set_class(event.size.width < NARROW_COLUMNS, "narrow")

    def on_mount(self) -> None:
        from engine.training.config import example_configs

        self.query_one("#train-form").border_title = "config"
        self.query_one("#preflight").border_title = "pre-flight"
        examples = self.query_one("#example", Select)
        examples.set_options([(path.stem, str(path)) for path in example_configs()])
        self.fill(self.defaults())
        self.fit(force=False)

    # ------------------------------------------------------------------ the form
    def defaults(self) -> Any:
        from engine.training.config import TrainConfig

        config = TrainConfig()
        # The model the app is working with is the sensible one to tune.
        active = getattr(self.app, "model_ref", None)
        if active:
            config.model = active
        return config

    def fill(self, config: Any) -> None:
        """Show `config` in the form; it is also the base for the settings the form lacks."""
        self.base = config
        methods = form_methods()
        method = self.query_one("#field-method", Select)
        if config.method in methods:
            method.value = config.method
        else:  # shown, never silently replaced by another method
            from engine.training.config import TrainConfig

            method.value = TrainConfig.method
            self.show_error(f"method: {config.method!r} is not one the Train form trains; "
                            f"choose one of {', '.join(methods)} (the method field now says "
                            f"{method.value}). Preference training (dpo, kto) starts from "
                            "`tunedeck train CONFIG`.")
        self.query_one("#field-precision", Select).value = (
            config.precision if config.precision in PRECISIONS else "auto")
        for field in FIELDS:
            self.query_one(f"#field-{field.name}", Input).value = field_text(
                getattr(config, field.name))

    def form_config(self) -> Any:
        """The form as a TrainConfig (raises TunedeckError naming the field)."""
        from engine.training.config import TrainConfig

        data = self.base.to_dict()
        data["method"] = self.query_one("#field-method", Select).value
        data["precision"] = self.query_one("#field-precision", Select).value
        for field in FIELDS:
            data[field.name] = parse_field(
                field, self.query_one(f"#field-{field.name}", Input).value)
        return TrainConfig.from_dict(data, source="Train form")

    # ------------------------------------------------------------------ fitting to the data
    def action_fit(self) -> None:
        self.fit(force=True)

    def fit(self, force: bool) -> None:
        """Fit the data-dependent fields to the form's model and dataset, in a worker."""
        try:
            config = self.form_config()
        except TunedeckError as err:
            self.set_status("Cannot fit the settings until the form is valid:")
            self.show_in_panel(Content(str(err)), error=True, check=False)
            return
        self._fitted_for = (config.model, config.dataset)
        self.set_status(f"Fitting the settings to {config.dataset}…")
        self._fit_worker(config, force)

    @on(Input.Submitted, "#field-model, #field-dataset")
    @on(Input.Blurred, "#field-model, #field-dataset")
    def _source_changed(self) -> None:
        source = (self.query_one("#field-model", Input).value.strip(),
                  self.query_one("#field-dataset", Input).value.strip())
        if source != self._fitted_for:
            self.fit(force=False)

    @work(thread=True, exclusive=True, exit_on_error=False, group="fit",
          description="Fitting to the data")
    def _fit_worker(self, config: Any, force: bool) -> tuple[Any, bool]:
        from engine.training.suggest import suggest

        try:
            suggestion = suggest(config, progress=lambda text: self.post_message(
                LoadProgress(str(text))))
        except Exception as err:  # the form keeps its values; nothing else is at stake
            self.post_message(FitFailed(describe_error(err)))
            return None, force
        if not get_current_worker().is_cancelled:  # an example chosen meanwhile wins
            self.post_message(SettingsFitted(suggestion, force))
        return suggestion, force

    def on_fit_failed(self, message: FitFailed) -> None:
        self.set_status("Could not fit the settings to the data (the form keeps its values):")
        self.show_in_panel(Content(message.error), error=True, check=False)

    def on_settings_fitted(self, message: SettingsFitted) -> None:
        self.apply_fit(message.suggestion, message.force)

    def apply_fit(self, suggestion: Any, force: bool) -> None:
        """Show the suggested values in the fields the user has not edited (all if `force`)."""
        config = suggestion.config
        method = self.query_one("#field-method", Select)
        if force or method.value == self.base.method:
            method.value = config.method
        kept = []
        for field in FIELDS:
            box = self.query_one(f"#field-{field.name}", Input)
            if force or box.value.strip() == field_text(getattr(self.base, field.name)):
                box.value = field_text(getattr(config, field.name))
            elif field_text(getattr(config, field.name)) != box.value.strip():
                kept.append(field.label)
        self.base = config
        lines = [f"Fitted to {config.dataset} ({suggestion.rows:,} training rows):"]
        lines += [f"• {reason}" for reason in suggestion.reasons]
        if kept:
            lines.append(f"Kept your {', '.join(kept)}; Ctrl+G fits those too.")
        if self._panel_has_check:  # a check's result stays; the fit is told aside
            self.notify("\n".join(lines), title="Settings fitted", timeout=8)
        else:
            self.set_status("Ctrl+T checks this config; Ctrl+L launches it.")
            self.show_in_panel(Content("\n".join(lines)), error=False, check=False)

    @on(Select.Changed, "#example")
    def _example_chosen(self, event: Select.Changed) -> None:
        from engine.training.config import TrainConfig

        self.workers.cancel_group(self, "fit")  # a fit still running must not overwrite it

        # What the panel showed was about the previous config: it must not stay.
        self.report, self._report_for = None, None
        if event.value is Select.NULL:
            self.fill(self.defaults())
            self.set_status("Ctrl+T checks this config; Ctrl+L launches it.")
            self.show_in_panel(Content("The defaults; Ctrl+G fits them to the data."),
                               error=False, check=False)
            return
        try:
            config = TrainConfig.from_yaml(str(event.value))
        except TunedeckError as err:
            self.show_error(str(err))
            return
        self.fill(config)
        self.set_status("Ctrl+T checks this config; Ctrl+L launches it.")
        self.show_in_panel(Content(example_summary(event.value, config)), error=False,
                           check=False)

    # ------------------------------------------------------------------ pre-flight / launch
    def action_preflight(self) -> None:
        self._start(launch=False)

    def action_launch(self) -> None:
        self._start(launch=True)

    def launch_options(self) -> Any:
        return launch_options(self.query_one("#launch-config", Select).value,
                              self.query_one("#launch-processes", Input).value)

    def _start(self, launch: bool) -> None:
        try:
            config = self.form_config()
            options = self.launch_options()
        except TunedeckError as err:
            self.show_error(str(err))
            return
        key = {**config.to_dict(), "launch": options.to_status()}
        # A passing check of this very config is not repeated before its launch.
        cached = self.report if key == self._report_for and getattr(
            self.report, "ok", False) else None
        self.set_status("Pre-flight, then launch…" if launch
                        else "Pre-flight: loading the tokenizer and the model…")
        self._train_worker(config, options, key, cached, launch)

    def action_open_last(self) -> None:
        run = self.last_run or remembered_run()
        if run is None:
            self.notify("No run launched from here yet; F5 lists every run.",
                        severity="warning")
            return
        self.last_run = run
        self.app.push_screen(RunViewScreen(run))

    @work(thread=True, exclusive=True, exit_on_error=False, group="train",
          description="Pre-flight")
    def _train_worker(self, config: Any, options: Any, key: dict[str, Any], report: Any,
                      launch: bool) -> None:
        if report is None:
            from engine.training.launch import preflight_launch

            report = preflight_launch(config, options, progress=lambda text: self.post_message(
                LoadProgress(str(text))))
        run = None
        if launch and report.ok:
            from engine.training.launch import launch as start

            self.post_message(LoadProgress("Starting the runner…"))
            # The pre-flight above is the check.
            run = start(config, check=False, options=options)
        if run is not None or not get_current_worker().is_cancelled:  # a later check wins
            self.post_message(PreflightDone(key, report, run))

    def on_load_progress(self, message: LoadProgress) -> None:
        self.set_status(message.text)

    def on_preflight_done(self, message: PreflightDone) -> None:
        self._report_for, report, run = message.key, message.report, message.run
        self.report = report
        self.show_report(report)
        if run is not None:
            self.last_run = run
            problem = remember_run(run)
            if problem:
                self.notify(problem, severity="warning")
            self.set_status(f"Launched {run.id}. Ctrl+O reopens its view; F5 lists every run.")
            if self.app.screen is self:
                self.app.push_screen(RunViewScreen(run))
            else:  # the user went elsewhere meanwhile: do not pull them back
                self.notify(f"Launched {run.id}: F4 then Ctrl+O, or F5, to watch it.")
        elif not report.ok:
            self.set_status("Fix the problems below, then Ctrl+T again.")
        else:
            self.set_status("Ctrl+L launches this config.")

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.show_error(message)
        super().worker_failed(worker, message)

    # ------------------------------------------------------------------ the panel
    def set_status(self, text: str) -> None:
        self.query_one("#preflight-status", Static).update(text)

    def show_in_panel(self, content: Content, error: bool, check: bool) -> None:
        """Show `content` under the status line; `check` marks a pre-flight result or launch
        error, which a later fit of the settings must not replace."""
        widget = self.query_one("#preflight-report", Static)
        widget.set_class(error, "error")
        widget.update(content)
        self._panel_has_check = check

    def show_report(self, report: Any) -> None:
        self.show_in_panel(report_content(report), error=False, check=True)

    def show_error(self, message: str) -> None:
        self.set_status("Not launched:")
        self.show_in_panel(Content(message), error=True, check=True)

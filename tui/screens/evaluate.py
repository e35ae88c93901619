"""Evaluate: run the prompting-vs-fine-tuning matrix on held-out data and read it.

Choose the dataset, an adapter (any finished run), the limit and the columns; `r` runs the matrix
in a thread worker on the app's model (progress with ETA, coalesced), `x` cancels after the batch
in flight. The table shows one row per column with the task's metric, prompt tokens and latency
per query, and the recommendation below it. The examples table lists every example with a ✓ / ✗
per column; Enter opens the drill-down (every column's output beside the reference, rated there).
`l` loads the newest saved result without running anything.
"""

from __future__ import annotations

import threading
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import (
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    SelectionList,
    Static,
)
from textual.worker import Worker

from tui.messages import EvaluationFinished
from tui.screens.base import WorkbenchScreen

DATASETS = (("text-to-SQL", "sample_data/text_to_sql"), ("sentiment", "sample_data/sentiment"),
            ("arithmetic", "sample_data/arithmetic"))
# (column alias, shown label, checked by default)
COLUMN_CHOICES = (("zero-shot", "zero-shot", True), ("k1", "few-shot k=1", True),
                  ("k3", "few-shot k=3", True), ("k5", "few-shot k=5", False),
                  ("cot", "chain-of-thought", True), ("sc", "self-consistency", False),
                  ("adapter", "adapter", True), ("adapter-k3", "adapter + few-shot k=3", True))
STATUS_MARK = {"correct": "✓", "wrong": "✗", "syntax_error": "S", "exec_error": "E",
               "no_answer": "–", "reference_error": "?"}
NO_ADAPTER = "(none)"
LEGEND = "✓ right  ✗ wrong  S syntax error  E query failed  – no answer  ? no reference"
# Matrix headers short enough that every column, ppl included, fits 80 columns.
SHORT_METRIC = {"execution accuracy": "exec acc", "answer accuracy": "answer acc",
                "normalized match": "norm match"}
# Examples-table headers: one mark per column, so a short name keeps them all on 80 columns.
SHORT_COLUMN = {"zero-shot": "zs", "few-shot k=1": "k1", "few-shot k=3": "k3",
                "few-shot k=5": "k5", "self-consistency": "sc", "adapter": "ad",
                "adapter + few-shot k=3": "ad+k3"}
SHORT_BELOW = 32  # rows: below this the matrix and recommendation give height to the examples


class EvalProgressUpdate(Message):
    """Progress from the worker; consecutive ones replace each other in the queue."""

    def __init__(self, text: str, fraction: float | None) -> None:
        super().__init__()
        self.text = text
        self.fraction = fraction

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EvalProgressUpdate)


def clip(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut at a word boundary with an ellipsis."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut + "…"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def matrix_rows(result: Any) -> list[tuple[str, ...]]:
    rows = []
    for row in result.table():
        rows.append((
            row["column"], str(row["n"]), _pct(row["accuracy"]), _pct(row["normalized_match"]),
            str(row["syntax_errors"]), f"{row['prompt_tokens']:.0f}", f"{row['latency_s']:.2f}s",
            f"{row['perplexity']:.2f}" if row["perplexity"] is not None else "–"))
    return rows


def example_rows(result: Any) -> list[tuple[str, ...]]:
    """One row per example: line, question, then a status mark per column."""
    if not result.columns:
        return []
    by_key = [{r["key"]: r for r in c.rows} for c in result.columns]
    keys = [r["key"] for r in max((c.rows for c in result.columns), key=len)]
    rows = []
    for key in keys:
        first = next(rows_[key] for rows_ in by_key if key in rows_)
        question = " ".join(str(first.get("input", "")).split())
        marks = [STATUS_MARK.get(rows_[key]["status"], "?") if key in rows_ else " "
                 for rows_ in by_key]
        rows.append((str(first.get("line", "")), clip(question, 40), *marks))
    return rows


class EvaluateScreen(WorkbenchScreen):
    HELP_TITLE = "Evaluate"
    HELP = ("Prompt it or fine-tune it? Runs zero-shot, few-shot, chain-of-thought, "
            "self-consistency and a trained adapter on the same held-out examples, with the "
            "active model (F8 or Ctrl+P changes it); with an adapter, on the base it was "
            "trained on ('4-bit base' follows it: ticked for QLoRA; changing it overrides, with "
            "a warning). r runs (or "
            "resumes: finished examples come from the cache), x cancels, l loads the newest saved "
            "result, Enter on an example shows every column's output beside the reference, where "
            "1-5 / + / - rate it. Marks: ✓ correct, ✗ wrong, S syntax error, E query failed, "
            "– no answer.")
    BINDINGS = [
        Binding("r", "run", "Run"),
        Binding("x", "cancel", "Cancel"),
        Binding("l", "load_latest", "Load last"),
    ]
    DEFAULT_CSS = """
    EvaluateScreen #eval-form { height: auto; }
    EvaluateScreen #eval-form-left { width: 1fr; height: auto; }
    EvaluateScreen #eval-form-left Horizontal { height: auto; }
    EvaluateScreen #eval-form-left Horizontal { margin-bottom: 1; }
    EvaluateScreen #eval-form-left Label { width: 9; padding: 0 0 0 1; }
    EvaluateScreen #eval-form-left Select { width: 1fr; }
    EvaluateScreen #eval-4bit { width: auto; margin-left: 1; }
    EvaluateScreen #eval-limit { width: 8; }
    EvaluateScreen #eval-path { width: 1fr; margin-left: 1; }
    EvaluateScreen #eval-columns { width: 30; height: 7; border: round $panel-lighten-2; }
    EvaluateScreen #eval-columns:focus { border: round $primary; }
    EvaluateScreen #eval-status-row { height: 1; padding: 0 1; }
    EvaluateScreen #eval-status { width: 1fr; }
    EvaluateScreen #eval-progress { width: 30; }
    EvaluateScreen #eval-matrix { height: auto; max-height: 11; }
    EvaluateScreen #eval-recommendation { height: auto; max-height: 4; padding: 0 1;
                                          color: $text; overflow-y: auto; }
    EvaluateScreen #eval-legend { height: auto; max-height: 2; padding: 0 1;
                                  color: $text-muted; }
    EvaluateScreen #eval-examples { height: 1fr; min-height: 4; }
    /* 24 rows: the matrix shares the height, so the examples table stays on screen. */
    EvaluateScreen.short #eval-matrix { max-height: 5; }
    EvaluateScreen.short #eval-recommendation { max-height: 3; }
    EvaluateScreen.short #eval-legend { max-height: 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.result: Any = None
        self._eval_cancel: threading.Event | None = None
        self._evaluating = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="eval-form"):
            with Vertical(id="eval-form-left"):
                with Horizontal():
                    yield Label("Data")
                    yield Select([(label, path) for label, path in DATASETS],
                                 value=DATASETS[0][1], allow_blank=False, id="eval-data",
                                 compact=True)
                with Horizontal():
                    yield Label("Adapter")
                    # Compact: one line that cuts a long run id instead of wrapping it over
                    # four (the whole id is in the open list).
                    yield Select([(NO_ADAPTER, NO_ADAPTER)], value=NO_ADAPTER,
                                 allow_blank=False, id="eval-adapter", compact=True)
                    yield Checkbox("4-bit base", id="eval-4bit", compact=True)
                with Horizontal():
                    yield Label("Limit")
                    yield Input(value="20", id="eval-limit", type="integer",
                                placeholder="all", compact=True)
                    yield Input(id="eval-path", placeholder="or a dataset folder / file",
                                compact=True)
            yield SelectionList[str](*[(label, alias, on) for alias, label, on in COLUMN_CHOICES],
                                     id="eval-columns")
        with Horizontal(id="eval-status-row"):
            yield Static("", id="eval-status")
            yield ProgressBar(total=1, show_eta=False, id="eval-progress")
        yield DataTable(id="eval-matrix", cursor_type="row", zebra_stripes=True)
        yield Static("", id="eval-recommendation")
        yield Static(LEGEND, id="eval-legend", markup=False)
        yield DataTable(id="eval-examples", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#eval-columns").border_title = "columns"
        self.query_one("#eval-matrix", DataTable).add_columns(*self.matrix_columns("metric"))
        self.query_one("#eval-progress", ProgressBar).display = False
        model = getattr(self.app, "model_ref", None) or "the default model"
        self.set_status(f"Model: {model} (F8 or Ctrl+P changes it). Choose data, adapter and "
                        "columns; r runs.")
        self.refresh_adapters()

    # ------------------------------------------------------------------ inputs
    def refresh_adapters(self) -> None:
        from engine.adapters import list_available

        try:
            found = [a for a in list_available() if a.kind == "final"]
        except Exception:  # a damaged run folder must not keep the screen from opening
            found = []
        options = [(NO_ADAPTER, NO_ADAPTER)] + [(a.label, a.ref) for a in found]
        select = self.query_one("#eval-adapter", Select)
        current = select.value
        select.set_options(options)
        refs = [ref for _, ref in options]
        select.value = current if current in refs else (refs[1] if len(refs) > 1 else NO_ADAPTER)
        self._adapter_changed()

    @on(Select.Changed, "#eval-adapter")
    def _adapter_changed(self) -> None:
        """The 4-bit box follows the chosen adapter's base (checked for QLoRA); ticking it
        otherwise is an override that the run warns about."""
        self.query_one("#eval-4bit", Checkbox).value = self._adapter_4bit(self._chosen_adapter())

    def _chosen_adapter(self) -> str | None:
        adapter = self.query_one("#eval-adapter", Select).value
        return None if adapter in (NO_ADAPTER, Select.BLANK) else str(adapter)

    @staticmethod
    def _adapter_4bit(adapter: str | None) -> bool:
        from engine.adapter_base import read_record
        from engine.errors import TunedeckError

        if not adapter:
            return False
        try:
            return read_record(adapter).quantization == "4bit"
        except TunedeckError:  # unreadable record: the run says why
            return False

    def spec_and_columns(self) -> tuple[Any, list[Any]]:
        from engine.errors import TunedeckError
        from engine.evaluation import EvalSpec, columns_from_names

        adapter = self._chosen_adapter()
        limit_text = self.query_one("#eval-limit", Input).value.strip()
        limit = int(limit_text) if limit_text else None
        if limit is not None and limit < 1:
            raise TunedeckError("Limit must be at least 1 (empty: every example).")
        chosen = list(self.query_one("#eval-columns", SelectionList).selected)
        if not adapter:
            chosen = [c for c in chosen if not c.startswith("adapter")]
        if not chosen:
            raise TunedeckError("Choose at least one column (adapter columns need an adapter).")
        model_ref = getattr(self.app, "model_ref", None)
        path = self.query_one("#eval-path", Input).value.strip()
        data = path or str(self.query_one("#eval-data", Select).value)
        four = self.query_one("#eval-4bit", Checkbox).value
        if adapter:
            # The adapter's own base unless the box was changed from what it trained on.
            quantize = None if four == self._adapter_4bit(adapter) else ("4bit" if four
                                                                         else "none")
            model_ref = None
        else:
            quantize = "4bit" if four else None
        spec = EvalSpec(data=data, limit=limit, adapter=adapter, model=model_ref,
                        quantize=quantize)
        return spec, columns_from_names(chosen, adapter=bool(adapter))

    # ------------------------------------------------------------------ running
    def action_run(self) -> None:
        from engine.errors import TunedeckError

        if self._evaluating:
            self.notify("An evaluation is running; x cancels it.", severity="warning")
            return
        try:
            spec, columns = self.spec_and_columns()
        except TunedeckError as err:
            self.set_status(str(err), error=True)
            return
        loaded = getattr(self.app, "loaded", None)
        if loaded is None and not spec.quantize and not spec.adapter:
            self.notify("The model is not loaded yet.", severity="warning")
            return
        self._eval_cancel = threading.Event()
        self._evaluating = True
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.update(total=1, progress=0)
        bar.display = True
        self.set_status(f"Starting: {len(columns)} columns…")
        # A base other than the app's model is loaded in the worker (with an adapter: unless
        # the app's model is the one it was trained on); the app's stays as it is.
        self.run_matrix(spec, columns, None if spec.quantize and not spec.adapter else loaded,
                        self._eval_cancel)

    @work(thread=True, exclusive=True, exit_on_error=False, group="evaluate",
          description="Evaluation")
    def run_matrix(self, spec: Any, columns: list[Any], loaded: Any,
                   cancel: threading.Event) -> None:
        from engine.evaluation import run_matrix
        from engine.formatting import duration

        def progress(p: Any) -> None:
            text = (f"[{p.column_index + 1}/{p.columns}] {p.column}: {p.done}/{p.total}  "
                    f"ETA {duration(p.eta_s)}")
            self.post_message(EvalProgressUpdate(text, p.fraction))

        def status(text: str) -> None:
            self.post_message(EvalProgressUpdate(text, None))

        result = None
        try:
            result = run_matrix(spec, columns, loaded=loaded, progress=progress, cancel=cancel,
                                status=status)
        finally:  # a failure also goes through the screen's error path (worker_failed)
            self.post_message(EvaluationFinished(result))

    def on_eval_progress_update(self, message: EvalProgressUpdate) -> None:
        if not self._evaluating:
            return
        self.set_status(message.text)
        if message.fraction is not None:
            self.query_one("#eval-progress", ProgressBar).update(total=1000,
                                                                 progress=1000 * message.fraction)

    def on_evaluation_finished(self, message: EvaluationFinished) -> None:
        self._evaluating = False
        self.query_one("#eval-progress", ProgressBar).display = False
        result = message.result
        if result is not None:
            self.show_result(result)
            where = f" Saved to {result.saved_to}." if result.saved_to else ""
            verb = "Cancelled" if result.cancelled else "Done"
            self.set_status(f"{verb}: {result.examples} examples × {len(result.columns)} "
                            f"columns in {result.seconds:.0f} s.{where}")
            for warning in result.warnings:
                self.notify(warning, severity="warning", timeout=15)

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.set_status(message, error=True)
        super().worker_failed(worker, message)

    def action_cancel(self) -> None:
        if self._evaluating and self._eval_cancel is not None:
            self._eval_cancel.set()
            self.set_status("Cancelling after the batch in flight…")

    def action_load_latest(self) -> None:
        from engine.errors import TunedeckError
        from engine.evaluation import load_result, saved_results

        found = saved_results()
        if not found:
            self.set_status("No saved evaluations yet: r runs one.")
            return
        try:
            result = load_result(found[0])
        except TunedeckError as err:
            self.set_status(str(err), error=True)
            return
        self.show_result(result)
        self.set_status(f"Loaded {found[0].name}.")

    # ------------------------------------------------------------------ showing
    def set_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#eval-status", Static)
        status.update(text)
        status.set_class(error, "error")

    def show_result(self, result: Any) -> None:
        self.result = result
        matrix = self.query_one("#eval-matrix", DataTable)
        matrix.clear(columns=True)
        matrix.add_columns(*self.matrix_columns(result.metric_name))
        for row in matrix_rows(result):
            matrix.add_row(*row)
        self.query_one("#eval-recommendation", Static).update(result.recommendation)
        examples = self.query_one("#eval-examples", DataTable)
        examples.clear(columns=True)
        examples.add_columns("line", "input", *[SHORT_COLUMN.get(c.column.name, c.column.name)
                                                for c in result.columns])
        for index, row in enumerate(example_rows(result)):
            examples.add_row(*row, key=str(index))
        names = [f"{SHORT_COLUMN[c.column.name]} {c.column.name}" for c in result.columns
                 if c.column.name in SHORT_COLUMN]
        self.query_one("#eval-legend", Static).update(LEGEND + ("\n" + ", ".join(names)
                                                                if names else ""))

    @staticmethod
    def matrix_columns(metric: str) -> tuple[str, ...]:
        return ("column", "n", SHORT_METRIC.get(metric, metric), "norm.", "syn.", "tok/q", "s/q",
                "ppl")

    def on_resize(self) -> None:
        self.set_class(self.size.height < SHORT_BELOW, "short")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "eval-examples":
            self.open_example(event.cursor_row)

    def open_example(self, index: int) -> None:
        from tui.screens.eval_detail import EvalDetailScreen

        if self.result is None or not self.result.columns:
            return
        self.app.push_screen(EvalDetailScreen(self.result, index))

"""Data: open a dataset, read its validation report, jump to each problem, browse the rows, see
token lengths and labels.

The file is read in one thread worker (validation + token stats) that reports progress through a
coalescing message; the screen only shows results. Rows shown in the table are the first
`BROWSE_ROWS` usable ones; the report always covers the whole file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import (
    DataTable,
    DirectoryTree,
    Footer,
    Header,
    Input,
    ProgressBar,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import Worker, get_current_worker

from tui.messages import DatasetChecked
from tui.screens.base import WorkbenchScreen
from tui.widgets.histogram import Histogram

BROWSE_ROWS = 2000  # rows kept for the table and the token statistics
DEFAULT_MAX_LEN = "2048"  # tokens: rows over it are flagged, as `data check --max-len` does
# What each detected layout is, for the summary line ("schema seed" alone says nothing).
SCHEMA_HELP = {
    "seed": "prompt + completion, optional instruction / system / rationale (tunedeck's format)",
    "prompt_completion": "TRL prompt + completion",
    "conversational": "prompt + completion as chat messages",
    "messages": "a chat in a messages list",
    "text": "plain text (completion-only training)",
    "alpaca": "Alpaca instruction / input / output",
    "preference": "prompt + chosen + rejected (DPO)",
    "unpaired_preference": "prompt + completion + good/bad label (KTO)",
}
DATA_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".parquet"}


def clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


class PathSuggester(Suggester):
    """Completes the last part of a path from the entries of its folder."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, stem = os.path.split(expanded)
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            return None
        for name in names:
            if name.startswith(stem) and name != stem and not name.startswith("."):
                full = os.path.join(folder, name)
                suffix = "/" if os.path.isdir(full) else ""
                return value[: len(value) - len(stem)] + name + suffix
        return None


class DataFiles(DirectoryTree):
    """Folders and dataset files only."""

    def filter_paths(self, paths):
        return [p for p in paths if not p.name.startswith(".")
                and (p.is_dir() or p.suffix.lower() in DATA_SUFFIXES)]


@dataclass
class DataProgress(Message):
    fraction: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DataProgress)


@dataclass
class Loaded:
    report: Any
    stats: Any
    stats_note: str


def issue_row(issue: Any) -> tuple[Text, ...]:
    """Cells as `Text`, so brackets in user data are never read as markup."""
    where = str(issue.line) if issue.line else "file"
    return (Text(where), Text(issue.field or ""), Text(issue.severity), Text(issue.message))


class DataScreen(WorkbenchScreen):
    HELP_TITLE = "Data"
    HELP = ("Type a dataset path (→ accepts the suggested completion) and press Enter, or open "
            "the file tree with ctrl+o. The report lists every problem with its line and field; "
            "Enter on a problem shows that line and, for usable rows, jumps to it in Rows. "
            "Enter on a row shows the whole row. Rows over 'max tokens' (prompt + completion "
            "with the active model's tokenizer, as `data check --max-len`) are flagged; Enter "
            "in that box re-checks. Lengths shows prompt + completion tokens.")
    BINDINGS = [
        Binding("ctrl+o", "toggle_tree", "Files"),
        Binding("ctrl+r", "reload", "Reload"),
        Binding("escape", "focus_path", "Path", show=False),
    ]
    DEFAULT_CSS = """
    DataScreen #data-path-row { height: 3; }
    DataScreen #data-path { width: 1fr; }
    DataScreen #data-max-len-label { width: auto; padding: 1 0 0 1; color: $text-muted; }
    DataScreen #data-max-len { width: 10; }
    DataScreen #data-progress { height: 1; display: none; padding: 0 1; }
    DataScreen #data-progress.loading { display: block; }
    DataScreen #data-body { height: 1fr; }
    DataScreen #data-tree { width: 32; border-right: solid $panel-lighten-2; }
    DataScreen TabbedContent { height: 1fr; }
    DataScreen TabPane { padding: 0; }
    DataScreen #data-summary { height: auto; max-height: 3; padding: 0 1; }
    DataScreen #data-issues { height: 1fr; min-height: 3; }
    DataScreen #data-detail { height: auto; max-height: 4; padding: 0 1; color: $text-muted; }
    DataScreen #data-rows { height: 1fr; }
    DataScreen #data-lengths-note { height: auto; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.initial_path = path
        self.path: str | None = None
        self.loaded: Loaded | None = None
        self._row_index: dict[int, int] = {}  # source line → row in the table

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="data-path-row"):
            yield Input(placeholder="dataset path (file, folder or hub id) — Enter opens",
                        id="data-path", suggester=PathSuggester())
            yield Static("max tokens", id="data-max-len-label")
            yield Input(DEFAULT_MAX_LEN, id="data-max-len", type="integer", placeholder="none")
        yield ProgressBar(total=1.0, show_eta=False, id="data-progress")
        with Horizontal(id="data-body"), TabbedContent(id="data-tabs"):
            with TabPane("Problems", id="tab-problems"), Vertical():
                yield Static("Open a dataset to check it.", id="data-summary")
                yield DataTable(id="data-issues", cursor_type="row", zebra_stripes=True)
                yield Static("", id="data-detail")
            with TabPane("Rows", id="tab-rows"):
                yield DataTable(id="data-rows", cursor_type="row", zebra_stripes=True)
            with TabPane("Lengths", id="tab-lengths"), Vertical():
                yield Static("", id="data-lengths-note")
                yield Histogram("no token lengths yet", id="data-lengths")
            with TabPane("Labels", id="tab-labels"):
                yield Histogram("completions are not short categories", id="data-labels")
        yield Footer()

    def on_mount(self) -> None:
        issues = self.query_one("#data-issues", DataTable)
        issues.add_columns("line", "field", "severity", "problem")
        rows = self.query_one("#data-rows", DataTable)
        rows.add_columns("line", "prompt", "completion")
        path_input = self.query_one("#data-path", Input)
        path_input.focus()
        if self.initial_path:
            path_input.value = self.initial_path
            self.open_path(self.initial_path)

    # ------------------------------------------------------------------ actions
    def action_toggle_tree(self) -> None:
        # Mounted only while open: its loader worker never ends, and would hold up anyone
        # waiting for this screen's workers.
        trees = self.query("#data-tree")
        if trees:
            trees.remove()
            self.action_focus_path()
            return
        tree = DataFiles(".", id="data-tree")
        self.query_one("#data-body", Horizontal).mount(tree, before=0)
        tree.focus()

    def action_reload(self) -> None:
        if self.path:
            self.open_path(self.path)

    def action_focus_path(self) -> None:
        self.query_one("#data-path", Input).focus()

    @on(Input.Submitted, "#data-path")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.open_path(event.value.strip())

    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#data-path", Input).value = str(event.path)
        self.query("#data-tree").remove()
        self.open_path(str(event.path))

    @on(Input.Submitted, "#data-max-len")
    def _max_len_submitted(self) -> None:
        self.action_reload()

    def max_len(self) -> int | None:
        text = self.query_one("#data-max-len", Input).value.strip()
        return int(text) if text.isdigit() and int(text) > 0 else None

    def open_path(self, path: str) -> None:
        self.path = path
        # What was on screen belongs to the previous file: a bad path must not leave it there.
        self.loaded = None
        self._row_index = {}
        self.query_one("#data-issues", DataTable).clear()
        self.query_one("#data-rows", DataTable).clear()
        self.query_one("#data-lengths", Histogram).set_bars([])
        self.query_one("#data-labels", Histogram).set_bars([])
        self.query_one("#data-lengths-note", Static).update("")
        summary = self.query_one("#data-summary", Static)
        summary.remove_class("error", "warning", "ok")
        summary.update(Text(f"Reading {path}…"))
        self.query_one("#data-detail", Static).update("")
        progress = self.query_one("#data-progress", ProgressBar)
        progress.update(progress=0.0)
        progress.add_class("loading")
        self._load(path, self._tokenizer_source(), self.max_len())

    def _tokenizer_source(self) -> Any:
        loaded = getattr(self.app, "loaded", None)
        if loaded is not None:
            return loaded.tokenizer
        return getattr(self.app, "model_ref", None)

    # ------------------------------------------------------------------ the worker
    @work(thread=True, exclusive=True, exit_on_error=False, group="data-load",
          description="Reading the dataset")
    def _load(self, path: str, tokenizer: Any, max_len: int | None = None) -> None:
        from engine import data

        worker = get_current_worker()
        note = ""
        if isinstance(tokenizer, str):
            try:
                from engine import models

                tokenizer = models.load_tokenizer(tokenizer)
            except Exception as err:  # lengths are a bonus: the report still shows
                tokenizer, note = None, f"token lengths unavailable: {err}"
        report = data.validate(path, keep=BROWSE_ROWS, tokenizer=tokenizer,
                               max_len=max_len if tokenizer is not None else None,
                               progress=lambda f: self.post_message(DataProgress(f)),
                               cancel=lambda: worker.is_cancelled)
        stats = None
        if report.examples:
            try:
                if tokenizer is not None:
                    stats = data.compute_stats(report.examples, tokenizer, report=report)
            except Exception as err:  # token stats are a bonus: the report still shows
                note = f"token lengths unavailable: {err}"
        if not worker.is_cancelled:  # a newer read replaced this one: it reports instead
            self.post_message(DatasetChecked(Loaded(report, stats, note)))

    def on_data_progress(self, message: DataProgress) -> None:
        self.query_one("#data-progress", ProgressBar).update(progress=message.fraction)

    def on_dataset_checked(self, message: DatasetChecked) -> None:
        self.query_one("#data-progress", ProgressBar).remove_class("loading")
        self.show(message.loaded)

    def worker_failed(self, worker: Worker, message: str) -> None:
        if worker.node is self:  # the screen's one worker, the read (not the folder tree's)
            self.query_one("#data-progress", ProgressBar).remove_class("loading")
            summary = self.query_one("#data-summary", Static)
            summary.update(Text(message))
            summary.add_class("error")
        super().worker_failed(worker, message)

    # ------------------------------------------------------------------ showing results
    def show(self, loaded: Loaded) -> None:
        self.loaded = loaded
        report = loaded.report
        summary = self.query_one("#data-summary", Static)
        summary.set_class(not report.ok, "error")
        summary.set_class(report.ok and not report.clean, "warning")
        summary.set_class(report.clean, "ok")
        text = report.summary().replace(f"{report.path}: ", "", 1)
        if report.schema in SCHEMA_HELP:
            text = text.replace(f"schema {report.schema}",
                                f"schema {report.schema} ({SCHEMA_HELP[report.schema]})", 1)
        if report.truncated:
            text += f" (first {len(report.issues):,} problems listed)"
        if report.max_len:
            text += f"; rows over {report.max_len:,} tokens flagged"
        summary.update(Text(text))
        issues = self.query_one("#data-issues", DataTable)
        issues.clear()
        for i, issue in enumerate(report.issues):
            issues.add_row(*issue_row(issue), key=str(i))
        rows = self.query_one("#data-rows", DataTable)
        rows.clear()
        self._row_index = {}
        for n, ex in enumerate(report.examples):
            self._row_index[ex.line] = n
            rows.add_row(Text(str(ex.line)), Text(clip(ex.user_text(), 40)),
                         Text(clip(ex.target(), 30)))
        self._show_stats(loaded)
        if report.issues:
            self._describe(0)
            self.query_one("#data-tabs", TabbedContent).active = "tab-problems"

    def _show_stats(self, loaded: Loaded) -> None:
        stats, report = loaded.stats, loaded.report
        lengths = self.query_one("#data-lengths", Histogram)
        labels = self.query_one("#data-labels", Histogram)
        note = self.query_one("#data-lengths-note", Static)
        if stats is None:
            lengths.set_bars([])
            labels.set_bars([])
            note.update(Text(loaded.stats_note))
            return
        scope = (f"first {stats.rows:,} usable rows" if stats.rows < report.usable
                 else f"{stats.rows:,} rows")
        t = stats.total_tokens
        note.update(f"tokens per row ({scope}): min {t.min}, median {t.median:g}, p95 {t.p95}, "
                    f"max {t.max}; template adds {stats.template_overhead}")
        lengths.set_bars([(f"{lo}–{hi}", n) for lo, hi, n in stats.histogram])
        labels.set_bars(list(stats.labels.items()))

    @on(DataTable.RowHighlighted, "#data-issues")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._describe(event.cursor_row)

    def _describe(self, index: int) -> None:
        if self.loaded is None or not 0 <= index < len(self.loaded.report.issues):
            return
        issue = self.loaded.report.issues[index]
        self.query_one("#data-detail", Static).update(Text(
            f"{issue.location()}{' [' + issue.field + ']' if issue.field else ''}: "
            f"{issue.message}\nfix: {issue.fix}"))

    @on(DataTable.RowSelected, "#data-rows")
    def _show_row(self, event: DataTable.RowSelected) -> None:
        """Enter on a row: the whole row, every field, in a scrollable view."""
        from tui.screens.data_row import RowScreen

        if self.loaded is None or not 0 <= event.cursor_row < len(self.loaded.report.examples):
            return
        self.app.push_screen(RowScreen(self.loaded.report.examples[event.cursor_row]))

    @on(DataTable.RowSelected, "#data-issues")
    def _jump(self, event: DataTable.RowSelected) -> None:
        """Enter on a problem: show the source line; a usable row also opens in Rows."""
        if self.loaded is None:
            return
        issue = self.loaded.report.issues[event.cursor_row]
        if issue.line in self._row_index:
            self.query_one("#data-tabs", TabbedContent).active = "tab-rows"
            rows = self.query_one("#data-rows", DataTable)
            rows.move_cursor(row=self._row_index[issue.line])
            rows.focus()
            return
        raw = source_line(Path(self.loaded.report.path), issue.line, issue.unit)
        if raw is not None:
            self._describe(event.cursor_row)
            detail = self.query_one("#data-detail", Static)
            detail.update(Text(f"{issue.location()}: {clip(raw, 300)}\nfix: {issue.fix}"))


def source_line(path: Path, line: int, unit: str) -> str | None:
    """The raw text of one line of a text file (None for rows of binary formats)."""
    if unit != "line" or line <= 0 or not path.is_file():
        return None
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == line:
                return raw[:2000].decode("utf-8", errors="replace").rstrip("\r\n") or "(blank)"
    return None

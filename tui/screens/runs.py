"""Runs: every run under the data home with its state; open one to reattach, mark several to
overlay their loss curves, stop / resume / save-now by key.

Each run's history is read incrementally (a cursor per run), so the timer only reads what the
runners appended since the last tick.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from engine.training.rundir import RunDir, list_runs
from tui.screens.base import WorkbenchScreen
from tui.screens.run_view import RunActions, RunHistory, RunViewScreen
from tui.widgets.loss_chart import LossChart, Series

POLL_SECONDS = 1.0
# What matters most comes first: at 80 columns the last ones scroll into view with →.
COLUMNS = ("", "run", "state", "step", "loss", "method", "model", "started")


def format_started(started: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(started)) if started else "–"


def short_model(model: str, width: int = 22) -> str:
    name = Path(model).name if "/" in model else model
    return name if len(name) <= width else name[: width - 1] + "…"


def short_label(run_id: str) -> str:
    """A legend label: the id without its date-time stamp (``20261129-081500-``)."""
    parts = run_id.split("-", 2)
    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
        return parts[2]
    return run_id


def run_row(history: RunHistory, marked: bool) -> tuple[str, ...]:
    total = history.total_steps
    loss, reward = history.last_loss, history.last_reward
    # GRPO's loss says little (~0 whenever the advantages are centred): its mean reward does.
    shown = f"R {reward:.2f}" if reward is not None else (f"{loss:.4f}" if loss is not None
                                                          else "–")
    return (
        "●" if marked else " ",
        history.run.id,
        history.state,
        f"{history.step}/{total}" if total else str(history.step),
        shown,
        history.method,
        short_model(history.model),
        format_started(history.started),
    )


class RunsScreen(RunActions, WorkbenchScreen):
    HELP_TITLE = "Runs"
    HELP = ("Every fine-tuning run under the data home. Enter opens the live view of a run "
            "(reattaching: the history is read from its events, then followed). Space marks "
            "runs; with runs marked the chart overlays their loss curves, else it shows the "
            "highlighted run (a GRPO run: its rewards; R in the loss column is its mean reward). e exports the highlighted run: GGUF + Ollama Modelfile, a merged "
            "Hugging Face folder, or the adapter alone. Runs go on when the app closes.")
    BINDINGS = [
        Binding("enter", "open", "Open", priority=True),
        Binding("space", "mark", "Mark"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("c", "save_now", "Save now"),
        Binding("e", "export", "Export"),
        Binding("s", "toggle_smooth", "Smooth"),
    ]
    DEFAULT_CSS = """
    RunsScreen #runs-table { height: 1fr; min-height: 5; }
    RunsScreen #runs-empty { height: auto; padding: 0 1; color: $text-muted; }
    RunsScreen #runs-chart { height: 1fr; min-height: 8; border: round $panel-lighten-2; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.histories: dict[str, RunHistory] = {}
        self.marked: list[str] = []
        self._rows: list[tuple[str, ...]] = []
        self._charted: tuple[tuple[str, ...], bool] = ((), False)  # (run ids, overlay?)

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("No runs yet. F4 (Train) starts one; `tunedeck train` does too.",
                     id="runs-empty")
        yield LossChart(id="runs-chart")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runs-table", DataTable).add_columns(*COLUMNS)
        self.refresh_runs()
        self.poll(POLL_SECONDS, self.refresh_runs)

    # ------------------------------------------------------------------ data
    @property
    def table(self) -> DataTable:
        return self.query_one("#runs-table", DataTable)

    @property
    def chart(self) -> LossChart:
        return self.query_one("#runs-chart", LossChart)

    def refresh_runs(self) -> None:
        runs = list_runs()
        grown: set[str] = set()
        for run in runs:
            history = self.histories.get(run.id)
            if history is None:
                history = self.histories[run.id] = RunHistory(run)
            new, _ = history.poll()
            if any(e.get("type") in ("log", "eval") for e in new):
                grown.add(run.id)
        ids = {run.id for run in runs}
        for gone in [k for k in self.histories if k not in ids]:
            del self.histories[gone]
        self.marked = [k for k in self.marked if k in ids]
        self._fill_table([self.histories[run.id] for run in runs])
        self._update_chart(force=bool(grown & set(self._charted[0])))

    def _fill_table(self, histories: list[RunHistory]) -> None:
        rows = [run_row(h, h.run.id in self.marked) for h in histories]
        self.query_one("#runs-empty").display = not rows
        if rows == self._rows:
            return
        table = self.table
        current = self.current_id()
        table.clear()
        for row in rows:
            table.add_row(*row, key=row[1])
        self._rows = rows
        keys = [row[1] for row in rows]
        if current in keys:
            table.move_cursor(row=keys.index(current), animate=False)

    def current_id(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # cursor outside the rows while the table refills
            return None

    def current_run(self) -> RunDir | None:
        run_id = self.current_id()
        history = self.histories.get(run_id) if run_id else None
        if history is None:
            self.notify("No run here.", severity="warning")
            return None
        return history.run

    def _update_chart(self, force: bool = False) -> None:
        current = self.current_id()
        shown = tuple(self.marked) if self.marked else ((current,) if current else ())
        key = (shown, bool(self.marked))
        if key == self._charted and not force:
            return
        self._charted = key
        chart = self.chart
        if self.marked:
            chart.show_overlay([self.histories[i].series(short_label(i)) for i in self.marked])
            chart.border_title = f"train loss of {len(self.marked)} marked runs"
        elif shown:
            chart.show_run(self.histories[shown[0]].series())
            chart.border_title = f"loss of {shown[0]}"
        else:
            chart.show_run(Series())
            chart.border_title = "loss"

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_chart()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()  # a click on the highlighted row (Enter is the screen's binding)

    # ------------------------------------------------------------------ actions
    def action_open(self) -> None:
        run = self.current_run()
        if run is not None:
            self.app.push_screen(RunViewScreen(run))

    def action_mark(self) -> None:
        run_id = self.current_id()
        if run_id is None:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked.append(run_id)
        self._fill_table([self.histories[r.id] for r in list_runs() if r.id in self.histories])
        self._update_chart()

    def action_stop(self) -> None:
        run = self.current_run()
        if run is not None:
            self.stop_run(run)

    def action_resume(self) -> None:
        run = self.current_run()
        if run is not None:
            self.resume_run(run)

    def action_save_now(self) -> None:
        run = self.current_run()
        if run is not None:
            self.save_now(run)

    def action_export(self) -> None:
        from tui.screens.runs_export import open_export

        open_export(self, self.current_id())

    def action_toggle_smooth(self) -> None:
        self.chart.smooth = not self.chart.smooth
        self.chart.border_subtitle = "" if self.chart.smooth else "raw"

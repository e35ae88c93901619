"""The live view of one run: loss chart, progress, sample completions and the tail of train.log.

Everything shown comes from the run directory. Attaching reads events.jsonl from the start (the
full history), then a timer reads what was appended since, through the same cursor; the files are
small and read incrementally, so the reads happen in the UI thread. The runner is never talked to
except through the run directory and `engine.training.launch` (stop / resume).

The rating bar under the samples points at the newest sample (or the one picked with ↑ / ↓ in
the samples panel), so the Rate screen's keys (1-5, + / -, e) rate it in place; the rating is
kept with the run id, step and sample index, the same record the Rate screen's import of this
run makes. Recording a sample the ratings database has not seen yet reads the whole events file
into it, so the bar does that in a worker.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Log

from engine.adapters import read_run_config
from engine.training.rundir import ACTIVE_STATES, EventCursor, RunDir
from tui.screens.base import WorkbenchScreen
from tui.widgets.loss_chart import LossChart, Series
from tui.widgets.rating_bar import RATING_BINDINGS, RatingBar, RatingKeys
from tui.widgets.run_progress import RunProgress
from tui.widgets.samples_panel import SamplesPanel

POLL_SECONDS = 0.5
LOG_TAIL_BYTES = 64 * 1024


class RunHistory:
    """Everything one run has reported so far, kept up to date by `poll()`."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.cursor = EventCursor()
        self.logs: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}
        self.state = "unknown"
        self._config: dict[str, Any] | None = None

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """Read what the run appended since the last call: (new events, status changed)."""
        new = self.run.read_events(self.cursor)
        for event in new:
            kind = event.get("type")
            if kind == "log":
                _append_by_step(self.logs, event)
            elif kind == "eval":
                _append_by_step(self.evals, event)
            elif kind == "sample":
                self.samples.append(event)
            elif kind == "state":
                self.states.append(event)
        status = self.run.read_status()
        state = self.run.state(status)
        changed = status != self.status or state != self.state
        self.status, self.state = status, state
        return new, changed

    # ------------------------------------------------------------------ derived
    @property
    def step(self) -> int:
        logged = _number(self.logs[-1].get("step")) if self.logs else None
        return int(max(logged or 0, _number(self.status.get("step")) or 0))

    @property
    def total_steps(self) -> int | None:
        total = _number(self.status.get("total_steps"))
        return int(total) if total else None

    @property
    def epoch(self) -> float | None:
        return _number(self.logs[-1].get("epoch")) if self.logs else None

    @property
    def last_loss(self) -> float | None:
        for event in reversed(self.logs):
            if _number(event.get("loss")) is not None:
                return _number(event.get("loss"))
        return None

    @property
    def last_eval_loss(self) -> float | None:
        return _number(self.evals[-1].get("eval_loss")) if self.evals else None

    @property
    def tokens_per_s(self) -> float | None:
        return _number(self.logs[-1].get("tokens_per_s")) if self.logs else None

    @property
    def mem_mb(self) -> float | None:
        return _number(self.logs[-1].get("mem_mb")) if self.logs else None

    @property
    def error(self) -> str:
        if self.state != "failed":
            return ""
        for event in reversed(self.states):
            if event.get("error"):
                return str(event["error"])
        return str(self.status.get("error")
                   or "the runner ended without saying why: see train.log")

    @property
    def eta_seconds(self) -> float | None:
        """From the pace of the current session of the runner (a resume restarts the clock)."""
        total = self.total_steps
        if not total or len(self.logs) < 2:
            return None
        since = max((_number(e.get("t")) or 0 for e in self.states
                     if e.get("state") == "running"), default=0)
        recent = [e for e in self.logs if (_number(e.get("t")) or 0) >= since] or self.logs
        if len(recent) < 2:
            recent = self.logs[-2:]
        first, last = recent[0], recent[-1]
        steps = (_number(last.get("step")) or 0) - (_number(first.get("step")) or 0)
        seconds = (_number(last.get("t")) or 0) - (_number(first.get("t")) or 0)
        if steps <= 0 or seconds <= 0:
            return None
        return seconds / steps * max(total - (_number(last.get("step")) or 0), 0)

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = read_run_config(self.run)
        return self._config

    @property
    def model(self) -> str:
        return str(self.status.get("model") or self.config.get("model") or "?")

    @property
    def method(self) -> str:
        return str(self.status.get("method") or self.config.get("method") or "?")

    @property
    def started(self) -> float | None:
        started = _number(self.status.get("started"))
        if started is None and (self.states or self.logs):
            started = _number((self.states or self.logs)[0].get("t"))
        return started

    def series(self, label: str = "") -> Series:
        with_loss = [e for e in self.logs if _number(e.get("loss")) is not None]
        with_lr = [e for e in self.logs if _number(e.get("lr")) is not None]
        return Series(
            label=label or self.run.id,
            steps=[e.get("step") for e in with_loss], losses=[e["loss"] for e in with_loss],
            eval_steps=[e.get("step") for e in self.evals],
            eval_losses=[e.get("eval_loss") for e in self.evals],
            lr_steps=[e.get("step") for e in with_lr], lrs=[e["lr"] for e in with_lr],
        )


def _append_by_step(events: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """A step logged again (a resume from an older checkpoint after kill -9) replaces the old
    points from that step on, so the curve never folds back on itself."""
    step = event.get("step")
    if isinstance(step, (int, float)):
        while events and isinstance(events[-1].get("step"), (int, float)) \
                and events[-1]["step"] >= step:
            events.pop()
    events.append(event)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class LogTail(Log):
    """The end of train.log, followed as it grows (a partial last line waits for its newline)."""

    DEFAULT_CSS = """
    LogTail { height: 1fr; }
    """

    def __init__(self, path: Path, *, id: str | None = None) -> None:
        super().__init__(max_lines=500, auto_scroll=True, id=id)
        self.path = path
        self._offset: int | None = None
        self._partial = b""

    def poll(self) -> bool:
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        skip_first = False
        if self._offset is None or size < self._offset:
            self._offset = max(size - LOG_TAIL_BYTES, 0)
            skip_first = self._offset > 0
            self._partial = b""
        if size == self._offset:
            return False
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read(size - self._offset)
        except OSError:  # rotated or removed under us: try again on the next tick
            return False
        self._offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial = data
            return False
        self._partial = data[cut + 1:]
        lines = data[:cut].decode("utf-8", "replace").split("\n")
        if skip_first:
            lines = lines[1:]
        # Progress bars redraw with \r: only the last state of a line is worth showing.
        self.write_lines(line.rsplit("\r", 1)[-1] for line in lines)
        return True


class RunView(Vertical):
    """The live view of one run; used inside `RunViewScreen` (from Train and Runs)."""

    DEFAULT_CSS = """
    RunView { height: 1fr; }
    RunView > LossChart { height: 1fr; min-height: 8; }
    RunView > #run-lower { height: 1fr; min-height: 6; }
    RunView #run-samples { width: 3fr; border: round $panel-lighten-2; padding: 0 1; }
    RunView #run-log { width: 2fr; border: round $panel-lighten-2; }
    RunView #run-samples:focus-within, RunView #run-log:focus { border: round $primary; }
    RunView.editing-ideal > LossChart { display: none; }
    """

    def __init__(self, run: RunDir, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run = run
        self.history = RunHistory(run)

    def compose(self) -> ComposeResult:
        yield RunProgress(id="run-progress")
        yield LossChart(id="run-chart")
        with Horizontal(id="run-lower"):
            yield SamplesPanel(id="run-samples")
            yield LogTail(self.run.log_path, id="run-log")
        yield RatingBar(id="run-rating")

    def on_mount(self) -> None:
        self.query_one("#run-samples").border_title = "samples"
        self.query_one("#run-log").border_title = "train.log"
        self.refresh_from_disk(force=True)
        if isinstance(self.screen, WorkbenchScreen):
            self.screen.poll(POLL_SECONDS, self.refresh_from_disk)
        else:
            self.set_interval(POLL_SECONDS, self.refresh_from_disk)

    @property
    def chart(self) -> LossChart:
        return self.query_one("#run-chart", LossChart)

    @property
    def samples(self) -> SamplesPanel:
        return self.query_one("#run-samples", SamplesPanel)

    def refresh_from_disk(self, force: bool = False) -> None:
        new, changed = self.history.poll()
        if new or changed or force:
            self.query_one("#run-progress", RunProgress).update_from(self.history)
        if force or any(e.get("type") in ("log", "eval") for e in new):
            self.chart.show_run(self.history.series())
        samples = [e for e in new if e.get("type") == "sample"]
        if samples:
            self.samples.add_samples(samples)
            self.rate_sample(self.samples.current)
        self.query_one("#run-log", LogTail).poll()

    def on_samples_panel_picked(self, message: SamplesPanel.Picked) -> None:
        self.rate_sample(message.position)

    def rate_sample(self, position: int) -> None:
        """Point the rating bar at the `position`-th sample the run wrote."""
        shown = self.samples.samples
        step = shown[position].get("step")
        # The ratings database numbers a step's samples in file order (engine.ratings,
        # import_run_samples): count the earlier ones at the same step the same way.
        index = sum(1 for s in shown[:position] if s.get("step") == step)
        # The bar ignores a repeat of the sample it shows, and says itself when it cannot rate.
        self.query_one("#run-rating", RatingBar).show_sample(self.run.id, step, index)

    # The ideal-answer editor needs 8 rows that an 80x24 terminal does not have below the chart:
    # the chart steps aside while it is open. The editor takes focus when it opens and gives it
    # up when it closes, so focus changes are the moments to look.
    def on_descendant_focus(self) -> None:
        self._follow_editor()

    def on_descendant_blur(self) -> None:
        self._follow_editor()

    def _follow_editor(self) -> None:
        self.set_class(self.query_one("#run-rating", RatingBar).editing, "editing-ideal")


class RunActions:
    """Stop / resume / save-now on a run, shared by the run view and the Runs screen.

    Launching code lives in `engine.training.launch`; it is imported in the worker, not here.
    """

    def stop_run(self, run: RunDir) -> None:
        self._stop_worker(run)

    def resume_run(self, run: RunDir) -> None:
        if run.is_active():
            self.notify(f"{run.id} is still {run.state()}.", severity="warning")  # type: ignore[attr-defined]
            return
        self._resume_worker(run)

    def save_now(self, run: RunDir) -> None:
        if not run.is_active():
            self.notify(f"{run.id} is {run.state()}: nothing to save.", severity="warning")  # type: ignore[attr-defined]
            return
        run.request_save()
        self.notify(f"{run.id}: a checkpoint will be written at the next step.")  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-control",
          description="Stopping the run")
    def _stop_worker(self, run: RunDir) -> None:
        from engine.training.launch import stop

        state = run.state()
        if state not in ACTIVE_STATES:
            self.app.call_from_thread(  # type: ignore[attr-defined]
                self.notify, f"{run.id} is {state}: nothing to stop.", severity="warning")
            return
        sent = stop(run)
        text = (f"{run.id}: stopping (a checkpoint is written first)." if sent
                else f"{run.id}: the runner is not running.")
        self.app.call_from_thread(self.notify, text)  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-control",
          description="Resuming the run")
    def _resume_worker(self, run: RunDir) -> None:
        from engine.training.launch import resume

        resumed = resume(run)
        self.app.call_from_thread(  # type: ignore[attr-defined]
            self.notify, f"{resumed.id}: resumed from its newest checkpoint.")


# The footer holds the run's own keys; the rating bar's hint line lists the rating keys.
RUN_RATING_BINDINGS = [replace(b, show=False) for b in RATING_BINDINGS]


class RunViewScreen(RatingKeys, RunActions, WorkbenchScreen):
    HELP_TITLE = "Run"
    HELP = ("The live view of one run, read from its run directory: closing it (or the app) "
            "leaves the run going. The chart shows train loss (smoothed or raw), eval loss and "
            "the learning rate on the right-hand axis. 1-5 stars, + / - thumbs and e (edit the "
            "ideal answer) rate the newest sample, or the one picked with ↑ / ↓ in the samples "
            "panel, as on the Rate screen.")
    # None of the rating keys (1-5, + / -, a / b / t, e) is one of the run's own keys.
    BINDINGS = [
        *RUN_RATING_BINDINGS,
        Binding("escape", "back", "Back"),
        Binding("s", "toggle_smooth", "Smooth"),
        Binding("l", "toggle_lr", "LR"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("c", "save_now", "Save now"),
    ]

    def __init__(self, run: RunDir) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunView(self.run, id="run-view")
        yield Footer()

    @property
    def view(self) -> RunView:
        return self.query_one("#run-view", RunView)

    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_smooth(self) -> None:
        self.view.chart.smooth = not self.view.chart.smooth

    def action_toggle_lr(self) -> None:
        self.view.chart.show_lr = not self.view.chart.show_lr

    def action_stop(self) -> None:
        self.stop_run(self.run)

    def action_resume(self) -> None:
        self.resume_run(self.run)

    def action_save_now(self) -> None:
        self.save_now(self.run)

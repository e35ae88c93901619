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

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header

from engine.adapters import read_run_config
from engine.training.rundir import ACTIVE_STATES, RunDir
from tui.run_history import RunHistory
from tui.screens.base import WorkbenchScreen
from tui.widgets.log_tail import LogTail
from tui.widgets.loss_chart import LossChart
from tui.widgets.rating_bar import RATING_BINDINGS, RatingBar, RatingKeys
from tui.widgets.run_progress import RunProgress
from tui.widgets.samples_panel import SamplesPanel

__all__ = ["LogTail", "RunActions", "RunHistory", "RunView", "RunViewScreen"]

POLL_SECONDS = 0.5


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
    RunView.wide-log #run-samples { display: none; }
    RunView.wide-log #run-log { width: 1fr; }
    """

    def __init__(self, run: RunDir, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run = run
        self.history = RunHistory(run)
        # Checkpoints there were when save-now was asked for; None when nothing is awaited.
        self.awaiting_save: set[str] | None = None

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
        if self.awaiting_save is not None:
            self._check_saved()

    def await_save(self) -> None:
        """Say so when the checkpoint asked for with save-now has been written."""
        self.awaiting_save = {p.name for p in self.run.checkpoints()}

    def _check_saved(self) -> None:
        if self.run.save_now_path.exists():
            return  # not taken up by the runner yet
        new = [p.name for p in self.run.checkpoints() if p.name not in (self.awaiting_save or ())]
        if new:
            self.awaiting_save = None
            self.notify(f"{self.run.id}: wrote {new[-1]} (save now).")
        elif not self.run.is_active():
            self.awaiting_save = None
            self.notify(f"{self.run.id} ended ({self.run.state()}) before writing the "
                        "checkpoint asked for.", severity="warning")

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
        status = run.read_status()
        state = run.state(status)
        if state in ACTIVE_STATES:
            self.notify(f"{run.id} is still {state}.", severity="warning")  # type: ignore[attr-defined]
            return
        if state == "done":
            # Not a failure: there is nothing left to resume. Say what can be done instead.
            step = status.get("step")
            where = "its adapter" if run.adapter_dir.is_dir() else "its model"
            self.notify(  # type: ignore[attr-defined]
                f"{run.id} finished" + (f" at step {step}" if step else "") + ": a finished "
                f"run cannot be resumed. Use {where} (F8 Models, the Playground, Evaluate), or "
                "train further with a new run from its config on Train (F4).",
                title="Finished run", timeout=10)
            return
        self._resume_worker(run)

    def save_now(self, run: RunDir) -> bool:
        """Ask for a checkpoint now; says precisely when it will be written. True if asked."""
        status = run.read_status()
        state = run.state(status)
        if state not in ("starting", "running"):
            self.notify(f"{run.id} is {state}: nothing to save.", severity="warning")  # type: ignore[attr-defined]
            return False
        run.request_save()
        step = int(status.get("step") or 0)
        if status.get("phase") == "evaluating":
            when = (f"checkpoint-{step} will be written when the evaluation in progress ends "
                    f"({status.get('phase_done') or 0}/{status.get('phase_total') or '?'} rows)")
        elif state == "starting":
            when = "a checkpoint will be written at the end of the first step"
        else:
            when = f"checkpoint-{step + 1} will be written at the end of step {step + 1}"
            save_every = int(read_run_config(run).get("save_every") or 0)
            if save_every and (step + 1) % save_every == 0:
                when += " (a regular checkpoint is due there anyway)"
        self.notify(f"{run.id}: {when}.")  # type: ignore[attr-defined]
        return True

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
            "panel, as on the Rate screen. x stops the run (an evaluation or sample in progress "
            "is cut short; the checkpoint is of the step it is at), c writes a checkpoint at the "
            "next step boundary, o gives train.log the whole lower row.")
    # None of the rating keys (1-5, + / -, a / b / t, e) is one of the run's own keys.
    BINDINGS = [
        *RUN_RATING_BINDINGS,
        Binding("escape", "back", "Back"),
        Binding("s", "toggle_smooth", "Smooth"),
        Binding("l", "toggle_lr", "LR"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("c", "save_now", "Save now"),
        Binding("o", "toggle_log", "Wide log"),
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
        if self.save_now(self.run):
            self.view.await_save()

    def action_toggle_log(self) -> None:
        """train.log over the whole lower row (samples hidden), and back."""
        self.view.toggle_class("wide-log")

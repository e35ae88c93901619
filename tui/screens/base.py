"""The base of every top-level screen: one place where worker errors are shown, not raised."""

from __future__ import annotations

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from engine.errors import TunedeckError


def describe_error(error: BaseException | None) -> str:
    """A one-line, user-facing description of a worker's error."""
    if error is None:
        return "unknown error"
    if isinstance(error, TunedeckError):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class WorkbenchScreen(Screen):
    """Screens inherit this so a failing worker becomes a visible message, never a crash.

    Subclasses may override `worker_failed` to show the error in place as well.
    """

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            message = describe_error(event.worker.error)
            self.worker_failed(event.worker, message)

    def worker_failed(self, worker: Worker, message: str) -> None:
        title = worker.description or worker.group or "Task"
        self.notify(message, title=f"{title} failed", severity="error", timeout=10)

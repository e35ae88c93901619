"""The base of every top-level screen: one place where worker errors are shown, not raised."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.events import ScreenResume, ScreenSuspend
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from engine.errors import describe_failure


def describe_error(error: BaseException | None) -> str:
    """A one-line, user-facing description of a worker's error (the CLI's words: OS and
    database errors say what happened to which file and what to do)."""
    if error is None:
        return "unknown error"
    return describe_failure(error)


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

    def poll(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """A timer for reading files on disk that sleeps while another screen is shown and
        catches up (one call) when this screen returns."""
        timer = self.set_interval(seconds, callback)
        self._polls = [*getattr(self, "_polls", []), (timer, callback)]
        return timer

    @on(ScreenSuspend)
    def _pause_polls(self) -> None:
        for timer, _ in getattr(self, "_polls", []):
            timer.pause()

    @on(ScreenResume)
    def _resume_polls(self) -> None:
        for timer, callback in getattr(self, "_polls", []):
            callback()
            timer.resume()

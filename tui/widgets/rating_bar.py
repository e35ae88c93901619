"""The rating keys, for any screen that shows a completion (Rate, Playground, Train samples,
evaluation views).

A screen mounts a `RatingBar`, points it at what it shows (`bar.show(item)`: an
`engine.ratings.Completion` or `Pair`), puts `RATING_BINDINGS` in its own BINDINGS and mixes in
`RatingKeys`:

    class PlaygroundScreen(RatingKeys, WorkbenchScreen):
        BINDINGS = [*RATING_BINDINGS, ...]

Keys: 1-5 stars, + / - thumbs up / down (again clears), a / b / t for an A/B pair, e edits the
ideal answer in place (ctrl+s saves, escape cancels). The keys are screen bindings, so a focused
text input keeps its own typing. Each change is written to the ratings database at once (a few
milliseconds) and announced with `RatingBar.Rated`.

The bar opens the ratings database itself (on first use) and closes it when it goes away; a
screen that also reads the store hands its own in (`RatingBar(store)`) and keeps closing it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static, TextArea

from engine.errors import TunedeckError
from tui.screens.base import describe_error

RATING_BINDINGS = [
    Binding("1", "rate_stars(1)", "1-5 stars", show=False),
    Binding("2", "rate_stars(2)", "2 stars", show=False),
    Binding("3", "rate_stars(3)", "3 stars", show=False),
    Binding("4", "rate_stars(4)", "4 stars", show=False),
    Binding("5", "rate_stars(5)", "5 stars", show=False),
    Binding("plus", "rate_thumbs(1)", "+ good", show=False),
    Binding("minus", "rate_thumbs(-1)", "- bad", show=False),
    Binding("a", "choose('a')", "A wins", show=False),
    Binding("b", "choose('b')", "B wins", show=False),
    Binding("t", "choose('tie')", "tie", show=False),
    Binding("e", "edit_ideal", "Ideal"),
]

HINT = "1-5 stars  + / - thumbs  e edit ideal"
PAIR_HINT = "a / b: which is better  t: tie"
RECORDING = "recording sample…"
SAMPLE_FAILED = "cannot rate this run's samples"


def describe(item: Any) -> str:
    """The rating of a completion or pair, as text."""
    if item is None:
        return "nothing to rate"
    if item.kind == "pair":
        return {"a": "A is better", "b": "B is better", "tie": "tie", None: "not chosen"}[
            item.choice]
    r = item.rating
    parts = []
    if r.stars is not None:
        parts.append("★" * r.stars + "☆" * (5 - r.stars))
    if r.thumbs is not None:
        parts.append("+ thumbs up" if r.thumbs > 0 else "- thumbs down")
    if r.ideal:
        parts.append("ideal answer edited")
    return "  ".join(parts) or "not rated"


class RatingBar(Widget):
    """Shows and changes the rating of one completion or A/B pair."""

    DEFAULT_CSS = """
    RatingBar { height: auto; border-top: solid $primary; padding: 0 1; }
    RatingBar #rating-state { width: 1fr; text-style: bold; }
    RatingBar #rating-hint { color: $text-muted; }
    RatingBar #ideal-editor { height: 8; display: none; }
    RatingBar.editing #ideal-editor { display: block; }
    """
    BINDINGS = [
        Binding("ctrl+s", "save_ideal", "Save ideal", show=False),
        Binding("escape", "cancel_ideal", "Cancel edit", show=False),
    ]

    class Rated(Message):
        """A rating changed (`item` is re-read from the database)."""

        def __init__(self, item: Any) -> None:
            super().__init__()
            self.item = item

    def __init__(self, store: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store = store
        # A store handed in is the caller's to close (a screen that also reads it, or a test).
        self._own_store = store is None
        self.item: Any = None
        # The run sample last asked for (its source_ref) while it is shown or being recorded;
        # a result for any other one is stale.
        self._sample: str | None = None
        self._recording = False
        self._unmounted = False

    @property
    def store(self) -> Any:
        if self._store is None:
            from engine.ratings import RatingStore

            self._store = RatingStore()
        return self._store

    def on_unmount(self) -> None:
        self._sample = None
        self._unmounted = True
        if self._own_store and self._store is not None:
            self._store.close()

    def compose(self) -> ComposeResult:
        yield Static(describe(None), id="rating-state")
        yield Static(HINT, id="rating-hint")
        yield TextArea(id="ideal-editor", soft_wrap=True)

    @property
    def editing(self) -> bool:
        return self.has_class("editing")

    def show(self, item: Any) -> None:
        """Point the bar at a completion or pair (None: nothing to rate)."""
        self._sample = None  # a sample still being recorded is no longer wanted
        self._show(item)

    def _show(self, item: Any, recording: bool = False) -> None:
        if self.editing:
            self.action_cancel_ideal()
        self.item = item
        self._recording = recording
        self._render_state()

    def show_try(self, try_id: int) -> None:
        """Rate a playground try (recorded in the store's `tries`): the Playground's hook."""
        self.show(self.store.get_completion(self.store.add_try(try_id)))

    def show_sample(self, run_id: str, step: int, index: int = 0) -> None:
        """Rate the `index`-th sample a run wrote at `step`: the Train / Runs samples' hook.

        Asking again for the sample already shown (or being recorded) changes nothing, so an
        open ideal-answer editor survives new samples arriving elsewhere. Errors are shown here.
        """
        ref = f"run:{run_id}:{step}:{index}"
        if ref == self._sample:
            return
        try:
            found = self.store.completion_by_source(ref)
        except (TunedeckError, sqlite3.Error, OSError) as err:
            self._cannot_rate(describe_error(err))
            return
        self._show(found, recording=found is None)
        self._sample = ref
        self.border_title = f"rate: sample at step {step}" + (f" (#{index + 1})" if index else "")
        if found is None:
            # Only a sample not seen before needs the run's events read in (the whole file, and
            # SQLite writes): in a thread, so paging and the chart never wait on it.
            self._record_sample(run_id, ref)

    @work(thread=True, exclusive=True, exit_on_error=False, group="rating-sample",
          description="Recording a sample to rate")
    def _record_sample(self, run_id: str, ref: str) -> None:
        store = self.store
        try:
            store.import_run_samples(run_id)
            found = store.completion_by_source(ref)
        except Exception as err:  # a widget's worker errors reach no screen (they do not
            # bubble): say it here rather than fail silently
            self.app.call_from_thread(self._sample_failed, ref, describe_error(err))
        else:
            self.app.call_from_thread(self._sample_found, ref, found)
        finally:
            if self._unmounted and self._own_store:
                # The bar went away while this ran: close the connection the import reopened.
                store.close()

    def _sample_found(self, ref: str, found: Any) -> None:
        # The user may have moved on (or a second import of the same sample got here first).
        if ref == self._sample and self._recording:
            self._show(found)

    def _sample_failed(self, ref: str, message: str) -> None:
        if ref == self._sample:
            self._cannot_rate(message)

    def _cannot_rate(self, message: str) -> None:
        # The database is busy, or the run is not under the data home (opened by path): the
        # view still works, only rating does not. Forgetting the sample lets the next ask retry.
        self.show(None)
        self.border_title = SAMPLE_FAILED
        self.notify(message, title="Cannot rate samples", severity="warning")

    def _render_state(self) -> None:
        self.query_one("#rating-state", Static).update(
            RECORDING if self._recording else describe(self.item))
        hint = PAIR_HINT if self.item is not None and self.item.kind == "pair" else HINT
        if self.editing:
            hint = "editing the ideal answer: ctrl+s saves, escape cancels"
        self.query_one("#rating-hint", Static).update(hint)

    def _reload(self) -> None:
        item = self.item
        self.item = self.store.get_pair(item.id) if item.kind == "pair" \
            else self.store.get_completion(item.id)
        self._render_state()
        self.post_message(self.Rated(self.item))

    def _needs(self, kind: str) -> bool:
        if self.item is None:
            self.notify("Nothing to rate here.", severity="warning")
            return False
        if self.item.kind != kind:
            self.notify("This is an A/B pair: press a, b or t." if kind == "completion"
                        else "a / b / t choose between two answers; this is a single one.",
                        severity="warning")
            return False
        return True

    # ------------------------------------------------------------------ changes
    def set_stars(self, stars: int) -> None:
        if self._needs("completion"):
            same = self.item.rating.stars == stars
            self.store.rate(self.item.id, stars=None if same else stars)
            self._reload()

    def set_thumbs(self, thumbs: int) -> None:
        if self._needs("completion"):
            same = self.item.rating.thumbs == thumbs
            self.store.rate(self.item.id, thumbs=None if same else thumbs)
            self._reload()

    def choose(self, choice: str) -> None:
        if self._needs("pair"):
            self.store.choose(self.item.id, choice)
            self._reload()

    def edit_ideal(self) -> None:
        if not self._needs("completion"):
            return
        editor = self.query_one("#ideal-editor", TextArea)
        editor.load_text(self.item.rating.ideal or self.item.completion)
        editor.move_cursor(editor.document.end)
        self.add_class("editing")
        self._render_state()
        editor.focus()

    def action_save_ideal(self) -> None:
        if not self.editing:
            return
        text = self.query_one("#ideal-editor", TextArea).text
        self.remove_class("editing")
        # Saving the answer unchanged records no correction.
        same = text.strip() == self.item.completion.strip()
        self.store.rate(self.item.id, ideal=None if same or not text.strip() else text)
        self.screen.set_focus(None)
        self._reload()

    def action_cancel_ideal(self) -> None:
        if self.editing:
            self.remove_class("editing")
            self.screen.set_focus(None)
            self._render_state()


class RatingKeys:
    """Mixin for screens: the rating actions, applied to the screen's `RatingBar`."""

    def _rating_bar(self) -> RatingBar:
        return self.query_one(RatingBar)  # type: ignore[attr-defined]

    def _apply(self, change: str, *args: Any) -> None:
        # A locked or unreadable database must show up as a message, not end the app.
        try:
            getattr(self._rating_bar(), change)(*args)
        except (TunedeckError, sqlite3.Error, OSError) as err:
            self.notify(f"Rating not saved: {err}", severity="error")  # type: ignore[attr-defined]

    def action_rate_stars(self, stars: int) -> None:
        self._apply("set_stars", stars)

    def action_rate_thumbs(self, thumbs: int) -> None:
        self._apply("set_thumbs", thumbs)

    def action_choose(self, choice: str) -> None:
        self._apply("choose", choice)

    def action_edit_ideal(self) -> None:
        self._apply("edit_ideal")

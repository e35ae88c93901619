"""The Rate screen's keys where completions are shown outside it: the Playground's output and a
run's samples. Each rating must land in the ratings database on the record the Rate screen would
show for the same try or sample (same source reference), so nothing is rated twice.
"""

from __future__ import annotations

import sqlite3
import threading

from test_playground import open_playground, wait_for
from test_runs_screen import fake_run
from textual.app import App
from textual.containers import VerticalScroll
from textual.widgets import Static, TextArea

from engine.errors import TunedeckError
from engine.ratings import RatingStore
from engine.store import HistoryStore
from tui.app import TunedeckApp
from tui.widgets.completion_view import CompletionView
from tui.widgets.rating_bar import RatingBar


async def test_playground_rates_the_run_it_just_recorded(default_model):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot, default_model)
        bar = screen.query_one(RatingBar)
        assert bar.item is None and bar.display

        box = screen.query_one("#var-prompt", TextArea)
        box.load_text("What is the capital of France?")
        await pilot.pause(0.5)
        box.focus()
        await pilot.press("4")  # typed into the prompt, not a rating
        assert box.text == "4What is the capital of France?" and bar.item is None
        box.load_text("What is the capital of France?")
        await pilot.pause(0.5)

        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not screen._generating and bar.item is not None)
        await pilot.pause()
        pane = screen.query_one("#out-0", CompletionView)
        assert "Paris" in pane.text

        pane.query_one(VerticalScroll).focus()
        await pilot.press("4")
        await pilot.pause()
        assert bar.item.rating.stars == 4
        assert "try #" in str(bar.border_title)
        ratings = bar.store
    assert ratings._db is None, "the ratings database was left open"

    store = HistoryStore()
    (try_,) = store.list_tries()
    store.close()
    with RatingStore() as ratings:
        (rated,) = [c for c in ratings.completions("try") if c.rating.judged]
    assert rated.try_id == try_.id and rated.source_ref == f"try:{try_.id}"
    assert rated.rating.stars == 4 and rated.rating.thumbs is None
    assert "Paris" in rated.completion and rated.completion == try_.output


async def test_playground_hides_the_rating_bar_in_compare_mode():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        bar = screen.query_one(RatingBar)
        screen.set_focus(None)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not bar.display
        await pilot.press("4")  # nothing to rate: a warning, not a crash
        await pilot.pause()
        assert any("Nothing to rate" in n.message for n in app._notifications)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert bar.display


async def test_run_view_rates_the_newest_sample():
    run = fake_run("20251129-090000-done-c3d4", steps=30, total=60, state="done")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        from tui.screens.run_view import RunViewScreen

        app.push_screen(RunViewScreen(run))
        await pilot.pause()
        bar = app.screen.query_one(RatingBar)
        await wait_for(pilot, lambda: bar.item is not None, 10)  # recorded in a worker
        assert "step 30" in str(bar.border_title)
        await pilot.press("plus")
        await pilot.pause()
        assert bar.item.rating.thumbs == 1
        opened = bar.store
        app.pop_screen()
        await pilot.pause()
        assert opened._db is None, "closing the run view left the ratings database open"

    with RatingStore() as ratings:
        samples = ratings.completions("sample")
    assert len(samples) == 3  # the run's three samples, each recorded once
    (rated,) = [c for c in samples if c.rating.judged]
    assert rated.run_id == run.id and rated.extra["step"] == 30 and rated.extra["sample"] == 0
    assert rated.source_ref == f"run:{run.id}:30:0"
    assert rated.rating.thumbs == 1 and rated.rating.stars is None
    assert rated.completion == "SELECT count(*) FROM singer -- step 30"


async def test_run_view_follows_new_samples_and_numbers_a_step_s_second_sample():
    run = fake_run("20251129-090000-live-a1b2", steps=10, total=60, state="done")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        from tui.screens.run_view import RunViewScreen

        app.push_screen(RunViewScreen(run))
        await pilot.pause()
        bar = app.screen.query_one(RatingBar)
        await wait_for(pilot, lambda: bar.item is not None, 10)
        assert bar.item.source_ref == f"run:{run.id}:10:0"
        # A second sample at the same step (a resume re-sampling it) is a record of its own.
        run.append_event("sample", step=10, prompt="p", reference="r", completion="again")
        await wait_for(pilot, lambda: bar.item is not None
                   and bar.item.source_ref == f"run:{run.id}:10:1", 10)
        await pilot.press("2")
        await pilot.pause()
        assert bar.item.completion == "again" and bar.item.rating.stars == 2


async def test_playground_ctrl_s_saves_the_ideal_answer_while_it_is_edited(tunedeck_home):
    store = HistoryStore()
    try_id = store.add_try(model="m", adapter=None, template="instruction",
                           template_text="{{ prompt }}", strategy={"kind": "zero-shot"},
                           params={}, inputs={"prompt": "capital of France?"},
                           prompt_text="capital of France?", output="Lyon", metrics={})
    entry = store.get_try(try_id)
    store.close()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        screen._restore_try(entry)  # as the history browser hands it back
        await pilot.pause()
        bar = screen.query_one(RatingBar)
        assert bar.item.try_id == try_id
        screen.set_focus(None)
        await pilot.press("e")
        await pilot.pause()
        editor = bar.query_one("#ideal-editor", TextArea)
        assert bar.editing and editor.has_focus
        editor.load_text("Paris")
        # Ctrl+S is also the Playground's "save template" (a priority key): here it saves the
        # ideal answer, and no template.
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not bar.editing and bar.item.rating.ideal == "Paris"
    assert not list((tunedeck_home / "templates").glob("*"))


async def test_run_view_rates_the_sample_picked_in_the_samples_panel():
    run = fake_run("20251129-090000-live-a1b2", steps=30, total=60, state="done")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        from tui.screens.run_view import RunViewScreen

        app.push_screen(RunViewScreen(run))
        await pilot.pause()
        view = app.screen.view
        bar = app.screen.query_one(RatingBar)
        await wait_for(pilot, lambda: bar.item is not None, 10)
        view.samples.focus()
        await pilot.press("up")  # from the newest (step 30) to step 20
        await pilot.pause()
        assert bar.item.source_ref == f"run:{run.id}:20:0"
        assert "step 20" in str(bar.border_title)
        await pilot.press("minus")
        await pilot.pause()
        # A new sample does not move the bar off the one being read.
        run.append_event("sample", step=40, prompt="p", reference="r", completion="new")
        await wait_for(pilot, lambda: len(view.samples.samples) == 4, 10)
        await pilot.pause()
        assert bar.item.source_ref == f"run:{run.id}:20:0"
        await pilot.press("down", "down", "down")  # past the newest: follow new samples again
        await pilot.pause()
        assert view.samples.picked is None
        await wait_for(pilot, lambda: bar.item is not None, 10)
        assert bar.item.source_ref == f"run:{run.id}:40:0"

    with RatingStore() as ratings:
        (rated,) = [c for c in ratings.completions("sample") if c.rating.judged]
    assert rated.extra["step"] == 20 and rated.rating.thumbs == -1


class Host(App):
    def __init__(self, store=None):
        super().__init__()
        self.store = store

    def compose(self):
        yield RatingBar(self.store)


def state(bar: RatingBar) -> str:
    return str(bar.query_one("#rating-state", Static).render())


async def test_paging_through_samples_reads_the_run_only_for_a_new_sample(monkeypatch):
    run = fake_run("20251129-090000-done-c3d4", steps=30, total=60, state="done")
    imports: list[tuple[str, bool]] = []
    real = RatingStore.import_run_samples

    def counting(self, run_id):
        imports.append((run_id, threading.current_thread() is threading.main_thread()))
        return real(self, run_id)

    monkeypatch.setattr(RatingStore, "import_run_samples", counting)
    with RatingStore() as store:
        app = Host(store)
        async with app.run_test() as pilot:
            bar = app.query_one(RatingBar)
            bar.show_sample(run.id, 30)
            assert bar.item is None and state(bar) == "recording sample…"
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert bar.item.source_ref == f"run:{run.id}:30:0"
            assert imports == [(run.id, False)], "the run's events were read on the UI thread"
            assert "step 30" in str(bar.border_title)
            for step in (20, 10, 20, 30):  # ↑ / ↓ in the samples panel: no worker, no wait
                bar.show_sample(run.id, step)
                assert bar.item.completion == f"SELECT count(*) FROM singer -- step {step}"
            assert len(imports) == 1, "each key re-read the run's events"
            run.append_event("sample", step=40, prompt="p", reference="r", completion="new")
            bar.show_sample(run.id, 40)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert bar.item.completion == "new" and len(imports) == 2
            bar.show_sample(run.id, 50)  # never written: nothing to rate
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert bar.item is None and state(bar) == "nothing to rate"
            bar.show_sample(run.id, 50)  # asked again (a poll): the run is not read again
            assert len(imports) == 3


async def test_a_sample_recorded_late_does_not_replace_the_one_moved_to(monkeypatch):
    run = fake_run("20251129-090000-done-c3d4", steps=30, total=60, state="done")
    release = threading.Event()
    real = RatingStore.import_run_samples

    def slow(self, run_id):
        release.wait(10)
        return real(self, run_id)

    with RatingStore() as store:
        store.import_run_samples(run.id)  # steps 10-30 recorded already
        run.append_event("sample", step=40, prompt="p", reference="r", completion="new")
        monkeypatch.setattr(RatingStore, "import_run_samples", slow)
        app = Host(store)
        async with app.run_test() as pilot:
            bar = app.query_one(RatingBar)
            bar.show_sample(run.id, 40)  # the newest: its import waits
            await pilot.pause()
            assert state(bar) == "recording sample…" and "step 40" in str(bar.border_title)
            bar.show_sample(run.id, 20)  # the user moves up meanwhile
            assert bar.item.extra["step"] == 20 and "step 20" in str(bar.border_title)
            release.set()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert bar.item.extra["step"] == 20 and "step 20" in str(bar.border_title)
            assert state(bar) == "not rated"
        assert store.completion_by_source(f"run:{run.id}:40:0").completion == "new"


async def test_a_failing_import_is_shown_and_retried(monkeypatch):
    run = fake_run("20251129-090000-done-c3d4", steps=30, total=60, state="done")
    calls: list[str] = []

    def failing(self, run_id):
        calls.append(run_id)
        raise TunedeckError("the database is locked")

    monkeypatch.setattr(RatingStore, "import_run_samples", failing)
    with RatingStore() as store:
        app = Host(store)
        async with app.run_test() as pilot:
            bar = app.query_one(RatingBar)
            bar.show_sample(run.id, 30)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert bar.item is None and state(bar) == "nothing to rate"
            assert bar.border_title == "cannot rate this run's samples"
            (note,) = app._notifications
            assert note.message == "the database is locked" and note.title == "Cannot rate samples"
            bar.show_sample(run.id, 30)  # the next new sample (a poll) tries again
            await app.workers.wait_for_complete()
            assert len(calls) == 2


async def test_a_database_error_on_looking_a_sample_up_is_shown(monkeypatch):
    def locked(self, ref):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(RatingStore, "completion_by_source", locked)
    with RatingStore() as store:
        app = Host(store)
        async with app.run_test() as pilot:
            bar = app.query_one(RatingBar)
            bar.show_sample("20251129-090000-done-c3d4", 30)
            await pilot.pause()
            assert bar.item is None and bar.border_title == "cannot rate this run's samples"
            (note,) = app._notifications
            assert "the history database is busy (database is locked)" in note.message


async def test_the_bar_closes_the_store_it_opened_and_not_one_handed_in():
    run = fake_run("20251129-090000-done-c3d4", steps=30, total=60, state="done")
    app = Host()
    async with app.run_test() as pilot:
        bar = app.query_one(RatingBar)
        bar.show_sample(run.id, 30)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert bar.item is not None
        own = bar.store
        assert own._db is not None
    assert own._db is None

    with RatingStore() as store:
        app = Host(store)
        async with app.run_test() as pilot:
            bar = app.query_one(RatingBar)
            bar.show_sample(run.id, 30)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert bar.store is store
        assert store._db is not None, "the bar closed the caller's store"
        assert store.completion_by_source(f"run:{run.id}:30:0") is not None

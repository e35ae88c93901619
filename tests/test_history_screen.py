"""The history browser's search: it reads the database once per pause in the typing."""

from __future__ import annotations

from textual.widgets import DataTable

from engine.store import HistoryStore
from tui.app import TunedeckApp
from tui.screens import history
from tui.screens.history import HistoryScreen


class CountingStore(HistoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.searches: list[str | None] = []

    def list_tries(self, *args, **kwargs):
        self.searches.append(kwargs.get("search"))
        return super().list_tries(*args, **kwargs)


def two_tries(store: HistoryStore) -> None:
    for template, text in (("instruction", "hello there"), ("sentiment", "great")):
        store.add_try(model="m", adapter=None, template=template, template_text="{{ prompt }}",
                      strategy={"kind": "zero-shot"}, params={}, inputs={"prompt": text},
                      prompt_text=text, output="o", metrics={})


async def open_history(pilot, store: HistoryStore) -> HistoryScreen:
    screen = HistoryScreen(store)
    pilot.app.push_screen(screen)
    await pilot.pause()
    assert store.searches == [None]  # the first page, at mount
    return screen


async def test_typing_a_word_runs_one_search(monkeypatch):
    # A slow machine's key presses must not be read as pauses in the typing.
    monkeypatch.setattr(history, "SEARCH_DELAY", 1.0)
    store = CountingStore()
    two_tries(store)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_history(pilot, store)
        table = screen.query_one("#history-table", DataTable)
        await pilot.press("slash", *"hello")
        assert store.searches == [None] and table.row_count == 2
        await pilot.pause(1.3)
        assert store.searches == [None, "hello"] and table.row_count == 1
        await pilot.press("backspace", *"XYZ")
        await pilot.pause(1.3)
        assert store.searches[1:] == ["hello", "hellXYZ"] and table.row_count == 0
    store.close()


async def test_enter_searches_at_once_without_waiting(monkeypatch):
    monkeypatch.setattr(history, "SEARCH_DELAY", 1.0)
    store = CountingStore()
    two_tries(store)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_history(pilot, store)
        table = screen.query_one("#history-table", DataTable)
        await pilot.press("slash", *"great", "enter")
        assert store.searches == [None, "great"] and table.row_count == 1 and table.has_focus
        await pilot.pause(1.3)
        assert store.searches == [None, "great"]  # the pending search was not run again
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is not screen
    store.close()

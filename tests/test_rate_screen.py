"""The Rate screen, driven by real keys: ratings land in the database."""

from __future__ import annotations

import pytest

from engine.ratings import RatingStore
from tui.app import TunedeckApp

QUESTIONS = ["What is 2+2?", "Capital of France?", "Colour of the sky?", "What is 3+3?",
             "Largest planet?", "Boiling point of water?"]


def fill() -> RatingStore:
    store = RatingStore()
    for i, q in enumerate(QUESTIONS):
        store.add_completion(source="try" if i % 2 else "eval", prompt=q,
                             messages=[{"role": "user", "content": q}], completion=f"answer {i}",
                             model="smollm2-135m-instruct", template="generic",
                             strategy={"kind": "zero-shot"}, params={"temperature": 0.0})
    a = store.add_completion(source="ab", prompt="Say hi", completion="Hello there!",
                             messages=[{"role": "user", "content": "Say hi"}],
                             params={"temperature": 0.0})
    b = store.add_completion(source="ab", prompt="Say hi", completion="hi",
                             messages=[{"role": "user", "content": "Say hi"}],
                             params={"temperature": 1.0})
    store.add_pair(a, b, info={"kind": "temperature", "a": {"temperature": 0.0},
                               "b": {"temperature": 1.0}})
    return store


async def open_rate(pilot) -> None:
    await pilot.press("f6")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def status(app) -> str:
    return str(app.screen.query_one("#rate-status").render())


async def test_rate_five_items_by_keys_and_the_database_holds_them():
    store = fill()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_rate(pilot)
        screen = app.screen
        assert type(screen).__name__ == "RateScreen"
        assert status(app).startswith("0 / 7 rated")
        await pilot.press("5", "n", "plus", "n", "2", "minus", "n")
        await pilot.press("e", "ctrl+u")  # the editor opens on the answer
        await pilot.press(*"Paris, obviously.")
        await pilot.press("ctrl+s", "n", "4", "n")
        assert status(app).startswith("5 / 7 rated")
        # A single answer ignores the A/B keys; the pair ignores stars.
        await pilot.press("a")
        assert "5 / 7" in status(app)
    items = {c.prompt: c.rating for c in store.completions()}
    assert items["What is 2+2?"].stars == 5
    assert items["Capital of France?"].thumbs == 1
    assert (items["Colour of the sky?"].stars, items["Colour of the sky?"].thumbs) == (2, -1)
    assert items["What is 3+3?"].ideal == "Paris, obviously."
    assert items["Largest planet?"].stars == 4
    assert items["Boiling point of water?"].stars is None
    store.close()


async def test_ab_pair_hides_its_origin_until_chosen_and_filters():
    store = fill()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_rate(pilot)
        await pilot.press("s", "s", "s", "s")  # all → try → sample → eval → ab
        assert "source: A/B pairs" in status(app) and "item 1 of 1" in status(app)
        provenance = app.screen.query_one("#rate-provenance")
        assert "hidden" in str(provenance.render())
        await pilot.press("5")  # stars do not apply to a pair
        await pilot.press("b")
        assert "B: temperature 1" in str(provenance.render())
        assert store.pairs()[0].choice == "b"
        await pilot.press("s", "s", "u")  # manual (empty) → all, unrated only
        assert "unrated only" in status(app) and "item 1 of 6" in status(app)
        await pilot.press("3", "u")
        assert status(app).startswith("2 / 7 rated")
    store.close()


async def test_generate_an_ab_pair_with_the_model(tiny_model_dir):
    from engine import models

    store = fill()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        app.loaded = models.load(str(tiny_model_dir))
        await open_rate(pilot)
        app.screen.ab_max_new_tokens = 12
        await pilot.press("g")
        await app.workers.wait_for_complete()
        await pilot.pause()
        item = app.screen.current
        assert item.kind == "pair" and item.prompt == "What is 2+2?"
        assert {variant["temperature"] for variant in (item.info["a"], item.info["b"])} == \
            {0.0, 1.0}
        assert status(app).startswith("0 / 8 rated")
        await pilot.press("t")
    pair = store.get_pair(item.id)
    assert pair.choice == "tie" and pair.a.source == pair.b.source == "ab"
    assert pair.a.model == app.loaded.info.name and pair.a.messages == \
        [{"role": "user", "content": "What is 2+2?"}]
    store.close()


def test_rate_screen_snapshot(snap_compare):
    fill().close()

    async def settle(pilot) -> None:
        await open_rate(pilot)
        await pilot.press("4", "plus")

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(100, 30),
                        run_before=settle)


@pytest.mark.parametrize("size", [(80, 24)])
async def test_empty_queue_says_where_items_come_from(size):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=size) as pilot:
        await open_rate(pilot)
        assert "Nothing to rate yet" in str(app.screen.query_one("#rate-empty").render())
        await pilot.press("5", "g")  # nothing to rate, nothing to generate: no crash
        assert status(app).startswith("0 / 0 rated")


async def test_the_rating_keys_work_on_any_screen_that_mounts_the_bar():
    """How the Playground / Train samples / evaluation views reuse the keys."""
    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import Input

    from engine.store import HistoryStore
    from tui.widgets.rating_bar import RATING_BINDINGS, RatingBar, RatingKeys

    store = fill()
    with HistoryStore(store.path) as tries:
        try_id = tries.add_try(model="m", adapter=None, template="generic", template_text="",
                               strategy={}, params={}, inputs={"prompt": "hi"},
                               prompt_text="hi", output="hello", metrics={})

    class Playground(RatingKeys, Screen):
        BINDINGS = [*RATING_BINDINGS]

        def compose(self):
            yield Input(id="box")
            yield RatingBar(store)

    class Host(App):
        def on_mount(self):
            self.push_screen(Playground())

    app = Host()
    async with app.run_test(size=(80, 20)) as pilot:
        bar = app.screen.query_one(RatingBar)
        bar.show_try(try_id)
        app.screen.query_one("#box").focus()
        await pilot.press("5")  # typing in a focused input is not a rating
        assert app.screen.query_one("#box").value == "5"
        app.screen.set_focus(None)
        await pilot.press("4", "minus")
        assert "★★★★☆" in str(bar.query_one("#rating-state").render())
    rated = [c for c in store.completions("try") if c.try_id == try_id][0]
    assert (rated.rating.stars, rated.rating.thumbs) == (4, -1)
    store.close()

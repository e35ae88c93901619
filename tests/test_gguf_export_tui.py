"""Export from the TUI: `e` on the Runs screen and on the Models screen opens the export dialog
(GGUF + Modelfile, merged folder, or the adapter), and the export runs in a worker."""

from __future__ import annotations

import json

from adapter_runs import make_run

from engine import export, paths
from tui.app import TunedeckApp
from tui.screens.runs_export import ExportDialog, default_name


def _run_with_adapter(tmp_path):
    """A finished run whose adapter folder is enough to list and copy (no model is loaded)."""
    run = make_run(tmp_path, name="tui-export", final=False)
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": str(tmp_path), "peft_type": "LORA"}))
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"weights")
    return run


async def test_runs_screen_exports_the_highlighted_run(tmp_path):
    run = _run_with_adapter(tmp_path)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        assert any(active.binding.key == "e" and active.binding.description == "Export"
                   for active in app.screen.active_bindings.values())
        await pilot.press("e")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ExportDialog) and dialog.selected == run.id
        # GGUF is the first choice; pick "adapter only" with the keyboard.
        await pilot.press("tab", "enter", "down", "down", "enter")
        await pilot.pause()
        assert dialog.query_one("#export-kind").value == "adapter"
        assert not dialog.query_one("#export-quant-row").display  # a GGUF-only choice
        name = dialog.query_one("#export-name").value
        assert name == default_name(run.id, "adapter")  # the id without its date-time stamp
        assert name.startswith("tui-export-") and name.endswith("-adapter")
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert type(app.screen).__name__ == "RunsScreen"
        out = paths.exports_dir() / name
        assert (out / "adapter_config.json").is_file() and (out / export.EXPORT_MARKER).is_file()
        notes = [str(n.message) for n in app._notifications]
        assert any(f"Wrote the adapter to {out}" in n for n in notes), notes

        # Again under the same name: the engine's refusal is a notification, not a crash.
        await pilot.press("e", "tab", "enter", "down", "down", "enter", "ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert type(app.screen).__name__ == "RunsScreen"
        assert any("already exists" in str(n.message) for n in app._notifications)


async def test_models_screen_and_palette_offer_export(tmp_path):
    run = _run_with_adapter(tmp_path)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f8")
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ExportDialog)
        assert app.screen.adapters == [(f"{run.id} (final)", run.id)]
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "ModelsScreen"
        assert not paths.exports_dir().exists() or not any(paths.exports_dir().iterdir())
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Export a run" in commands


async def test_export_without_adapters_says_how_to_get_one():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5", "e")
        await pilot.pause()
        assert type(app.screen).__name__ == "RunsScreen"
        assert any("No run has an adapter to export yet" in str(n.message)
                   for n in app._notifications)

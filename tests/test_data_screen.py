"""The Data screen, driven with real keys at 80×24: open a damaged file, see each problem listed,
jump to a row, and see token lengths and labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent

from engine.data import sample_path
from tui.app import TunedeckApp
from tui.widgets.histogram import Histogram

BAD = Path(__file__).parent / "fixtures" / "data" / "bad"


@pytest.fixture
def app(default_model):
    app = TunedeckApp(load_model=False)
    app.loaded = default_model  # the tokenizer for token lengths
    return app


async def open_file(pilot, path: str) -> None:
    await pilot.press("f3")
    await pilot.pause()
    pilot.app.screen.query_one("#data-path", Input).value = path
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_problems_are_listed_with_line_and_field(app, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "q1", "completion": "a1"}\n'
                    '{"prompt": "q2", "completion": 42}\n'
                    "{oops\n"
                    '{"prompt": "q1", "completion": "a1"}\n', encoding="utf-8")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_file(pilot, str(path))
        screen = app.screen
        summary = str(screen.query_one("#data-summary", Static).render())
        assert "2 of 4 rows usable" in summary
        rows = cells(screen.query_one("#data-issues", DataTable))
        assert [r[:3] for r in rows] == [["2", "completion", "error"], ["3", "", "error"],
                                         ["4", "", "warning"]]
        assert "expected text" in rows[0][3]
        # Enter on an unusable row shows its source line in place.
        issues = screen.query_one("#data-issues", DataTable)
        issues.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert "{oops" in str(screen.query_one("#data-detail", Static).render())
        # Enter on a usable row (the duplicate) jumps to it in Rows.
        await pilot.press("down", "enter")
        await pilot.pause()
        assert screen.query_one("#data-tabs", TabbedContent).active == "tab-rows"
        table = screen.query_one("#data-rows", DataTable)
        assert str(table.get_row_at(table.cursor_row)[0]) == "4"


async def test_clean_file_rows_lengths_and_labels(app, tmp_path):
    path = tmp_path / "sentiment"
    shutil.copytree(sample_path("sentiment").parent, path)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_file(pilot, str(path))
        screen = app.screen
        assert "252 of 252 rows usable" in str(screen.query_one("#data-summary", Static).render())
        assert screen.query_one("#data-issues", DataTable).row_count == 0
        assert screen.query_one("#data-rows", DataTable).row_count == 252
        lengths = screen.query_one("#data-lengths", Histogram)
        assert sum(n for _, n in lengths.bars) == 252
        labels = dict(screen.query_one("#data-labels", Histogram).bars)
        assert set(labels) == {"positive", "negative", "neutral"}
        assert sum(labels.values()) == 252


async def test_missing_file_is_shown_not_raised(app, tmp_path):
    async with app.run_test(size=(80, 24)) as pilot:
        await open_file(pilot, str(tmp_path / "nope.jsonl"))
        summary = app.screen.query_one("#data-summary", Static)
        assert "no such file" in str(summary.render())
        assert summary.has_class("error")


async def test_path_completion(app, tmp_path):
    (tmp_path / "train_data.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        field = app.screen.query_one("#data-path", Input)
        field.value = str(tmp_path / "tra")
        field.cursor_position = len(field.value)
        await pilot.pause(0.2)
        await pilot.press("right")  # accept the suggestion
        assert field.value == str(tmp_path / "train_data.jsonl")


def test_snapshot_80x24(snap_compare, default_model, monkeypatch):
    # A repo-relative path, so the screen shows the same text on every machine.
    monkeypatch.chdir(BAD.parents[3])

    async def run_before(pilot):
        pilot.app.loaded = default_model
        await open_file(pilot, "tests/fixtures/data/bad/completion_number.jsonl")

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24),
                        run_before=run_before)

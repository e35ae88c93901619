"""The Evaluate screen (F7) and the per-example drill-down, driven with real keys.

A saved result written by hand (the same files `run_matrix` saves) makes the matrix, the
examples, the drill-down and rating deterministic; one test runs a real (tiny) matrix on the
default model from the screen.
"""

from __future__ import annotations

import pytest

from engine import paths
from engine.evaluation.matrix import MatrixResult, recommend
from engine.evaluation.metrics import aggregate
from engine.evaluation.spec import Column, ColumnResult, EvalSpec
from tui.app import TunedeckApp

QUESTIONS = [("How many customers live in Austin?",
              "SELECT COUNT(*) FROM customers WHERE city = 'Austin'"),
             ("List the product categories.", "SELECT DISTINCT category FROM products"),
             ("How many stores are there?", "SELECT COUNT(*) FROM stores")]


@pytest.fixture
def few_threads():
    """One torch thread: on a shared 2-core machine two threads that wait on each other make
    generation ~10× slower (measured: 8.4 s vs 87 s for 20 tokens)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _row(i: int, status: str, output: str, prompt_tokens: int) -> dict:
    question, reference = QUESTIONS[i]
    return {"key": f"k{i}", "line": i + 1, "input": question, "reference": reference,
            "output": output, "final": output, "status": status, "exact": output == reference,
            "normalized": output == reference, "detail": "" if status == "correct" else "3 rows",
            "prompt_tokens": prompt_tokens, "completion_tokens": 12, "latency_s": 0.5,
            "examples_used": 0}


def fake_result(save: bool = True) -> MatrixResult:
    columns = []
    plans = [
        (Column("zero-shot", "zero-shot"), ["wrong", "syntax_error", "correct"], 150),
        (Column("few-shot k=3", "few-shot", k=3), ["correct", "wrong", "correct"], 420),
        (Column("adapter", "zero-shot", adapter=True), ["correct", "correct", "correct"], 140),
    ]
    for column, statuses, tokens in plans:
        rows = [_row(i, s, QUESTIONS[i][1] if s == "correct" else "SELECT 1", tokens)
                for i, s in enumerate(statuses)]
        columns.append(ColumnResult(column, aggregate(rows, "sql"), rows, "text-to-sql"))
    result = MatrixResult(spec=EvalSpec(limit=3), task="sql",
                          source="sample_data/text_to_sql[test]", model="smollm2-135m-instruct",
                          adapter="20251129-090000-sql", columns=columns, examples=3)
    result.recommendation = recommend(result)
    if save:
        result.save(paths.evals_dir() / "20251129-090000-text_to_sql")
    return result


async def open_evaluate(pilot) -> None:
    await pilot.press("f7")
    await pilot.pause()


def test_recommendation_of_the_fake_result():
    text = fake_result(save=False).recommendation
    assert "Best prompting: few-shot k=3 at 67% execution accuracy" in text
    assert "adapter column beats few-shot k=3 by 33%" in text
    assert "1/3 of the prompt tokens" in text
    # Three examples are no evidence: no verdict either way.
    assert "Not enough evidence: n=3" in text and "use the fine-tuned adapter" not in text


async def test_load_saved_result_and_drill_down_and_rate():
    fake_result()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 32)) as pilot:
        await open_evaluate(pilot)
        screen = app.screen
        assert type(screen).__name__ == "EvaluateScreen"
        await pilot.press("l")
        await pilot.pause()
        matrix = screen.query_one("#eval-matrix")
        assert matrix.row_count == 3
        assert matrix.get_row_at(1)[:3] == ["few-shot k=3", "3", "67%"]
        assert "Not enough evidence: n=3" in str(screen.query_one("#eval-recommendation")
                                                 .render())
        examples = screen.query_one("#eval-examples")
        assert examples.row_count == 3
        assert examples.get_row_at(0)[2:] == ["✗", "✓", "✓"]
        assert examples.get_row_at(1)[2:] == ["S", "✗", "✓"]

        examples.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        detail = app.screen
        assert type(detail).__name__ == "EvalDetailScreen"
        assert detail.index == 1
        assert "List the product categories." in str(detail.query_one("#detail-head").render())
        table = detail.query_one("#detail-columns")
        assert [table.get_row_at(i)[1] for i in range(3)] == \
            ["syntax error", "✗ wrong", "✓ correct"]

        await pilot.press("down", "down", "4")  # the adapter's output: 4 stars
        await pilot.pause()
        await pilot.press("right")  # next example
        await pilot.pause()
        assert detail.index == 2
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "EvaluateScreen"

    from engine.ratings import RatingStore

    with RatingStore() as store:
        rated = [c for c in store.completions("eval") if c.rating.stars]
    assert len(rated) == 1
    assert rated[0].rating.stars == 4
    assert rated[0].completion == QUESTIONS[1][1]
    assert rated[0].adapter == "20251129-090000-sql"
    assert rated[0].extra["reference"] == QUESTIONS[1][1]


async def test_run_without_columns_says_why():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 32)) as pilot:
        await open_evaluate(pilot)
        screen = app.screen
        columns = screen.query_one("#eval-columns")
        columns.deselect_all()
        await pilot.press("r")
        await pilot.pause()
        assert "Choose at least one column" in str(screen.query_one("#eval-status").render())


@pytest.mark.slow
async def test_run_a_small_matrix_from_the_screen(default_model, few_threads):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 32)) as pilot:
        app.loaded = default_model
        await open_evaluate(pilot)
        screen = app.screen
        screen.query_one("#eval-data").value = "sample_data/sentiment"
        screen.query_one("#eval-limit").value = "2"
        columns = screen.query_one("#eval-columns")
        columns.deselect_all()
        columns.select("zero-shot")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        matrix = screen.query_one("#eval-matrix")
        assert matrix.row_count == 1
        assert matrix.get_row_at(0)[:2] == ["zero-shot", "2"]
        assert screen.query_one("#eval-examples").row_count == 2
        assert "Done: 2 examples × 1 columns" in str(screen.query_one("#eval-status").render())
    assert len(list(paths.evals_dir().glob("*/result.json"))) == 1


def test_evaluate_screen_snapshot(snap_compare):
    async def run_before(pilot) -> None:
        fake_result()
        await pilot.press("f7")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(100, 32),
                        run_before=run_before)

"""The hand-written held-out set of the text-to-SQL sample (`heldout.py` → `heldout.jsonl`):
every gold runs through the evaluator's judge, the file is what the script writes, no question
repeats a generated split, and the script refuses golds that cannot be judged fairly."""

from __future__ import annotations

import importlib.util
import json

import pytest

from engine.data import SAMPLE_DIR, leakage, load_examples, sql_sample_db
from engine.evaluation.metrics import SqlJudge

FOLDER = SAMPLE_DIR / "text_to_sql"
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def heldout_script():
    spec = importlib.util.spec_from_file_location("tunedeck_sample_heldout",
                                                  FOLDER / "heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows():
    return load_examples(FOLDER / "heldout.jsonl")


@pytest.fixture
def judge():
    """The judge as the evaluator builds it (on the database in this test's data home)."""
    j = SqlJudge(sql_sample_db())
    yield j
    j.close()


@pytest.fixture(scope="module")
def shipped_judge():
    """A judge on the shipped database (read-only), built once for the refusal cases."""
    j = SqlJudge(FOLDER / "retail.db")
    yield j
    j.close()


def test_every_gold_runs_through_the_judge_and_returns_rows(rows, judge):
    assert len(rows) >= 40
    for row in rows:
        reference = judge.reference(row.completion)
        assert not isinstance(reference, str), f"{row.prompt}: {reference}"
        result, _ordered = reference
        assert len(result) > 0, f"no rows: {row.prompt}"
        assert judge.judge(row.completion, row.completion).correct


def test_the_file_is_what_heldout_py_writes(heldout_script, tmp_path):
    out = heldout_script.write(tmp_path / "heldout.jsonl")
    assert out.read_bytes() == (FOLDER / "heldout.jsonl").read_bytes()


def test_no_heldout_question_appears_in_the_other_splits(rows):
    others = {s: load_examples(FOLDER / f"{s}.jsonl") for s in SPLITS}
    assert leakage({**others, "heldout": rows}) == []
    seen = {" ".join(r.prompt.lower().split()) for split in others.values() for r in split}
    assert not [r.prompt for r in rows if " ".join(r.prompt.lower().split()) in seen]
    assert len({r.prompt for r in rows}) == len(rows)
    # Same instruction as the generated rows, so templates render the task identically.
    train_instruction = json.loads((FOLDER / "train.jsonl").open().readline())["instruction"]
    assert {r.instruction for r in rows} == {train_instruction}


@pytest.mark.parametrize(("sql", "why"), [
    ("SELECT nope FROM customers", "fails"),
    ("SELECT city FROM customers WHERE city = 'Nowhere'", "no rows"),
    ("SELECT MAX(unit_price) FROM products WHERE category = 'Nowhere'", "no rows"),
    ("SELECT city FROM customers", "repeated row"),
    ("SELECT TOP 2 product_name FROM products", "TOP without ORDER BY"),
])
def test_the_script_refuses_golds_that_cannot_be_judged_fairly(heldout_script, shipped_judge,
                                                                sql, why):
    assert why in heldout_script.problem(shipped_judge, sql)


def test_the_script_keeps_a_fair_gold(heldout_script, shipped_judge):
    assert heldout_script.problem(shipped_judge, "SELECT TOP 2 product_name FROM products "
                                  "ORDER BY unit_price DESC, product_name") is None


def test_the_script_refuses_a_question_from_the_train_split(heldout_script, monkeypatch, tmp_path):
    train_row = json.loads((FOLDER / "train.jsonl").open().readline())
    monkeypatch.setattr(heldout_script, "QUESTIONS",
                        [*heldout_script.QUESTIONS[:2],
                         (train_row["prompt"].upper() + "  ", train_row["completion"])])
    with pytest.raises(SystemExit, match="question 3 .*repeats a train/validation/test prompt"):
        heldout_script.write(tmp_path / "heldout.jsonl")
    assert not (tmp_path / "heldout.jsonl").exists()


def test_the_evaluator_reads_the_heldout_split_and_draws_shots_from_train():
    from engine.evaluation.evaluator import EvalSpec, load_data

    data = load_data(EvalSpec(data=str(FOLDER), split="heldout"))
    assert len(data.examples) == len(load_examples(FOLDER / "heldout.jsonl"))
    assert data.task == "sql"
    assert data.source.endswith("[heldout]")
    assert len(data.shots) == len(load_examples(FOLDER / "train.jsonl"))

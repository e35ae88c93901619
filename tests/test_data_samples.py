"""The shipped sample datasets: sizes, layout, and every SQL completion runs on the database."""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import sys

import pytest

from engine.data import SAMPLE_DIR, SAMPLE_NAMES, leakage, load_examples, sample_path, sql_sample_db
from engine.errors import TunedeckError

MIN_ROWS = {"text_to_sql": 400, "sentiment": 300, "arithmetic": 150}
SPLITS = ("train", "validation", "test")


def _all(name):
    return {s: load_examples(sample_path(name, s)) for s in SPLITS}


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sizes_splits_readme_and_no_leakage(name):
    parts = _all(name)
    assert sum(len(v) for v in parts.values()) >= MIN_ROWS[name]
    assert all(len(v) >= 0.1 * MIN_ROWS[name] for v in parts.values())
    assert leakage(parts) == []
    readme = (SAMPLE_DIR / name / "README.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in readme and "generate.py" in readme
    for rows in parts.values():
        assert all(r.instruction and r.prompt and r.completion for r in rows)


def test_unknown_sample_name():
    with pytest.raises(TunedeckError, match="text_to_sql"):
        sample_path("poems")


def test_sentiment_labels():
    rows = [r for v in _all("sentiment").values() for r in v]
    assert {r.completion for r in rows} == {"positive", "negative", "neutral"}
    assert len({r.prompt for r in rows}) == len(rows)


def test_arithmetic_completion_is_rationale_then_answer():
    for rows in _all("arithmetic").values():
        for r in rows:
            assert r.completion == f"{r.rationale}\nAnswer: {r.answer}"
            assert re.fullmatch(r"-?\d+", r.answer)
            # The rationale's last step arrives at the answer.
            assert r.answer in re.findall(r"\d+", r.rationale.splitlines()[-1])


def test_every_sql_completion_runs_on_the_database():
    import sqlglot

    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # SAMPLE has no SQLite form
    db = sql_sample_db()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    teradata = {"TOP": 0, "QUALIFY": 0, "SAMPLE": 0}
    try:
        for rows in _all("text_to_sql").values():
            for r in rows:
                lite = sqlglot.transpile(r.completion, read="teradata", write="sqlite")[0]
                result = con.execute(lite).fetchall()
                assert result, f"no rows: {r.prompt} -> {r.completion}"
                for word in teradata:
                    teradata[word] += f" {word} " in f" {r.completion} "
    finally:
        con.close()
    assert all(n >= 10 for n in teradata.values()), teradata


def test_sql_database_is_built_deterministically(tmp_path, tunedeck_home):
    db = sql_sample_db()
    assert db.is_relative_to(tunedeck_home)
    shipped = SAMPLE_DIR / "text_to_sql" / "retail.db"
    assert db.read_bytes() == shipped.read_bytes()


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_generators_are_deterministic(name, tmp_path):
    """Re-running a generator writes byte-identical files (run on a copy, not in place)."""
    import shutil

    copy = tmp_path / name
    shutil.copytree(SAMPLE_DIR / name, copy)
    subprocess.run([sys.executable, str(copy / "generate.py")], check=True, capture_output=True,
                   timeout=120)
    for split in SPLITS:
        assert (copy / f"{split}.jsonl").read_bytes() == \
            (SAMPLE_DIR / name / f"{split}.jsonl").read_bytes()

"""Metric functions on hand-made cases: SQL execution accuracy against the sample database,
labels and the confusion table, chain-of-thought answers, text matches, and the aggregates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.evaluation import metrics as M


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    from engine.data.samples import _build_module

    # Module scope outlives the per-test data home: build the sample database once, aside.
    db = _build_module().build(tmp_path_factory.mktemp("sql") / "retail.db")
    j = M.SqlJudge(db, dialect="teradata")
    yield j
    j.close()


# --------------------------------------------------------------------------- SQL


def test_different_sql_text_same_result_set_is_correct(judge):
    reference = "SELECT COUNT(*) AS customer_count FROM customers WHERE city = 'Austin'"
    prediction = "select count(customer_id) from customers c where c.city='Austin'"
    assert not M.normalized_match(prediction, reference)
    outcome = judge.judge(prediction, reference)
    assert outcome.status == "correct", outcome.detail


def test_teradata_top_and_limit_agree(judge):
    reference = "SEL TOP 3 product_name FROM products ORDER BY unit_price DESC, product_id"
    prediction = "SELECT product_name FROM products ORDER BY unit_price DESC, product_id LIMIT 3"
    assert judge.judge(prediction, reference).correct


def test_row_order_matters_only_with_order_by(judge):
    unordered = "SELECT category FROM products GROUP BY category"
    reversed_ = "SELECT category FROM products GROUP BY category ORDER BY category DESC"
    assert judge.judge(reversed_, unordered).correct  # the reference does not order: a set
    ordered = "SELECT category FROM products GROUP BY category ORDER BY category"
    outcome = judge.judge(reversed_, ordered)
    assert outcome.status == "wrong"  # same rows, wrong order
    assert outcome.detail == "the right rows in the wrong order"


def test_different_rows_are_wrong(judge):
    outcome = judge.judge("SELECT COUNT(*) FROM customers WHERE city = 'Denver'",
                          "SELECT COUNT(*) FROM customers WHERE city = 'Austin'")
    assert outcome.status == "wrong"
    assert not outcome.correct
    assert outcome.detail == "1 row as expected, but different values"


def test_syntax_error_is_counted_apart_from_a_failing_query(judge):
    reference = "SELECT COUNT(*) FROM customers"
    syntax = judge.judge("SELECT COUNT(* FROM customers WHERE", reference)
    assert syntax.status == "syntax_error"
    failing = judge.judge("SELECT COUNT(*) FROM no_such_table", reference)
    assert failing.status == "exec_error"
    assert "no_such_table" in failing.detail


def test_runaway_nesting_is_a_syntax_error_not_a_crash(judge):
    runaway = "SELECT " + "COALESCE(" * 400 + "x"  # what a small model writes at its limit
    outcome = judge.judge(runaway, "SELECT COUNT(*) FROM customers")
    assert outcome.status == "syntax_error"


def test_connection_is_read_only(judge):
    outcome = judge.judge("DELETE FROM customers", "SELECT COUNT(*) FROM customers")
    assert outcome.status in ("exec_error", "syntax_error")
    assert judge.run("SELECT COUNT(*) FROM customers") == [(80,)]


def test_a_query_that_runs_too_long_is_stopped(judge):
    slow = M.SqlJudge(judge.db_path, timeout_s=0.05)
    cross = ("SELECT COUNT(*) FROM order_items a, order_items b, order_items c")
    outcome = slow.judge(cross, "SELECT 1")
    slow.close()
    assert outcome.status == "exec_error"
    assert "longer than" in outcome.detail


def test_broken_reference_is_not_counted_against_the_model(judge):
    outcome = judge.judge("SELECT 1", "SELECT * FROM missing_table")
    assert outcome.status == "reference_error"


@pytest.mark.parametrize("text, sql", [
    ("SELECT a FROM t", "SELECT a FROM t"),
    ("```sql\nSELECT a FROM t;\n```", "SELECT a FROM t"),
    ("Here is the query:\n```\nSELECT a\nFROM t\n```\nIt counts rows.", "SELECT a\nFROM t"),
    ("SQL: SELECT a FROM t;\nThis returns a.", "SELECT a FROM t"),
    ("First we look at t.\n\nAnswer: SELECT b FROM t", "SELECT b FROM t"),
])
def test_extract_sql(text, sql):
    assert M.extract_sql(text) == sql


def test_score_sql_uses_execution(judge):
    s = M.score("sql", "```sql\nSELECT COUNT(*) FROM stores\n```", "SELECT COUNT(store_id) FROM "
                "stores", judge=judge)
    assert s.correct and s.final == "SELECT COUNT(*) FROM stores"
    assert not s.exact


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("text, label", [
    ("positive", "positive"),
    ("Positive.", "positive"),
    ("Sentiment: negative", "negative"),
    ("The sentiment is neutral, not positive", "neutral"),
    ("I cannot tell", None),
    ("nonpositive", None),  # a label inside another word is not that label
])
def test_find_label(text, label):
    assert M.find_label(text, ["negative", "neutral", "positive"]) == label


def test_confusion_table_counts_and_accuracy():
    pairs = [("positive", "positive"), ("positive", "negative"), ("negative", "negative"),
             ("neutral", None), ("neutral", "neutral"), ("negative", "negative")]
    table = M.confusion_table(pairs, ["negative", "neutral", "positive"])
    assert table.labels == ["negative", "neutral", "positive", M.NO_LABEL]
    assert table.counts["positive"] == {"positive": 1, "negative": 1}
    assert table.counts["neutral"] == {M.NO_LABEL: 1, "neutral": 1}
    assert table.total == 6
    assert table.accuracy == pytest.approx(4 / 6)
    assert table.recall("positive") == pytest.approx(0.5)
    assert table.precision("negative") == pytest.approx(2 / 3)
    rows = table.rows()
    assert rows[0] == ["reference \\ predicted", "negative", "neutral", "positive", M.NO_LABEL]
    assert rows[1] == ["negative", "2", "0", "0", "0"]
    assert rows[3] == ["positive", "1", "0", "1", "0"]


def test_score_classification():
    labels = ["negative", "neutral", "positive"]
    assert M.score("classification", "Positive!", "positive", labels=labels).correct
    wrong = M.score("classification", "negative", "positive", labels=labels)
    assert wrong.status == "wrong" and wrong.final == "negative"
    none = M.score("classification", "no idea", "positive", labels=labels)
    assert none.status == "no_answer"


# --------------------------------------------------------------------------- answers and text


def test_cot_answer_accuracy():
    output = "4 mugs cost 4 × 4 = $16.\nThe change is 20 − 16 = $4.\nAnswer: $4"
    assert M.score("answer", output, "4").correct
    assert M.score("answer", "Answer: 1,000", "1000").correct
    assert M.score("answer", "Answer: 5", "4").status == "wrong"
    assert M.score("answer", "It is probably four.", "4").status == "no_answer"


def test_exact_and_normalized_match():
    assert M.exact_match(" Paris ", "Paris")
    assert not M.exact_match("paris.", "Paris")
    assert M.normalized_match("paris.", "Paris")
    assert M.normalized_match("```\nSELECT  a\nFROM t;\n```", "select a from t")
    assert not M.normalized_match("Lyon", "Paris")
    s = M.score("text", "  the capital is Paris ", "The capital is paris.")
    assert s.correct and s.normalized and not s.exact


def test_detect_task():
    ex = lambda **kw: SimpleNamespace(**{"answer": "", "completion": "", **kw})  # noqa: E731
    assert M.detect_task([ex(completion="SELECT 1"), ex(completion="SEL a FROM t")]) == "sql"
    assert M.detect_task([ex(completion="x", answer="3"), ex(completion="y", answer="4")]) == \
        "answer"
    labels = [ex(completion=c) for c in ["positive", "negative", "positive", "negative"]]
    assert M.detect_task(labels) == "classification"
    assert M.detect_task([ex(completion="a long free text answer here"),
                          ex(completion="another one")]) == "text"


def test_aggregate_rates_statuses_and_perplexity():
    rows = [
        {"status": "correct", "exact": True, "normalized": True, "prompt_tokens": 100,
         "completion_tokens": 10, "latency_s": 0.5, "loss": 1.0, "loss_tokens": 10,
         "reference": "a", "final": "a"},
        {"status": "syntax_error", "exact": False, "normalized": False, "prompt_tokens": 120,
         "completion_tokens": 20, "latency_s": 1.5, "loss": 2.0, "loss_tokens": 30,
         "reference": "b", "final": "x"},
        {"status": "reference_error", "prompt_tokens": 80, "completion_tokens": 0,
         "latency_s": 1.0, "reference": "c", "final": None},
    ]
    m = M.aggregate(rows, "sql")
    assert m.n == 3
    assert m.accuracy == pytest.approx(0.5)  # the broken reference is not scored
    assert m.syntax_errors == 1
    assert m.prompt_tokens == pytest.approx(100)
    assert m.latency_s == pytest.approx(1.0)
    assert m.loss == pytest.approx((1.0 * 10 + 2.0 * 30) / 40)  # token-weighted
    import math

    assert m.perplexity == pytest.approx(math.exp(m.loss))
    assert m.confusion is None

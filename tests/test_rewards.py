"""GRPO reward functions: the built-ins on crafted completions against the shipped sample
database, the SQL safety walls, a user's own reward file, and the `rewards:` spec checks."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import ConfigError, TunedeckError
from engine.evaluation.metrics import SqlJudge
from engine.training import rewards

QUESTION = "How many units of the Water Bottle have we sold?"
GOLD = ("SELECT SUM(oi.quantity) AS units_sold FROM order_items oi JOIN products p "
        "ON p.product_id = oi.product_id WHERE p.product_name = 'Water Bottle'")
SAME_ROWS = ("SELECT SUM(quantity) FROM order_items WHERE product_id IN "
             "(SELECT product_id FROM products WHERE product_name = 'Water Bottle')")
WRONG = GOLD.replace("Water Bottle", "Yoga Mat")
TOP_GOLD = "SELECT TOP 2 product_name, unit_price FROM products ORDER BY unit_price DESC, product_id"
FOREVER = ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) "
           "SELECT count(*) FROM r")
LABELS = ("positive", "negative", "neutral")


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """The shipped sample database, built once for this module in its own data home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TUNEDECK_HOME", str(tmp_path_factory.mktemp("rewards-home")))
    try:
        from engine.data import sql_sample_db

        return sql_sample_db()
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def sql_rewards(db):
    funcs, _ = rewards.build({"sql_exec": 1.0, "sql_valid": 0.5, "format": 0.2}, task="sql",
                             database=db)
    return {f.__name__: f for f in funcs}


def call(fn, completions, references=None, **extra):
    """Call a reward the way TRL's GRPOTrainer does."""
    kwargs = dict(prompts=[QUESTION] * len(completions), completions=completions,
                  completion_ids=[[1, 2]] * len(completions), trainer_state=object(),
                  log_extra=lambda *a: None, log_metric=lambda *a: None, **extra)
    if references is not None:
        kwargs["reference"] = references
    return fn(**kwargs)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- SQL


def test_sql_exec_scores_result_sets(sql_rewards):
    completions = [GOLD, SAME_ROWS, f"```sql\n{SAME_ROWS};\n```", f"Sure. SQL: {GOLD}", WRONG,
                   "SELEC SUM(quantity) FRM order_items", "", "I do not know.",
                   "SELECT SUM(nope) FROM order_items"]
    got = call(sql_rewards["sql_exec"], completions, [GOLD] * len(completions))
    assert got == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_sql_exec_order_matters_when_the_reference_orders(sql_rewards):
    reordered = "SELECT TOP 2 product_name, unit_price FROM products ORDER BY unit_price ASC"
    got = call(sql_rewards["sql_exec"], [TOP_GOLD, reordered], [TOP_GOLD, TOP_GOLD])
    assert got == [1.0, 0.0]


def test_sql_conversational_completions(sql_rewards):
    completions = [[{"role": "assistant", "content": f"```sql\n{GOLD}\n```"}],
                   [{"role": "assistant", "content": WRONG}],
                   [{"role": "assistant", "content": [{"type": "text", "text": SAME_ROWS}]}]]
    prompts = [[{"role": "user", "content": QUESTION}]] * 3
    got = sql_rewards["sql_exec"](prompts=prompts, completions=completions, reference=[GOLD] * 3)
    assert got == [1.0, 0.0, 1.0]
    assert sql_rewards["format"](prompts=prompts, completions=completions) == [1.0, 1.0, 1.0]


def test_a_failing_reference_is_missing_not_zero(sql_rewards):
    got = call(sql_rewards["sql_exec"], [GOLD, GOLD], [GOLD, "SELECT * FROM no_such_table"])
    assert got == [1.0, None]


def test_sql_exec_needs_the_reference_column(sql_rewards):
    with pytest.raises(TunedeckError, match="no 'reference' column"):
        call(sql_rewards["sql_exec"], [GOLD])
    with pytest.raises(TunedeckError, match="2 references for 1 completions"):
        call(sql_rewards["sql_exec"], [GOLD], [GOLD, GOLD])


def test_sql_valid_parses_and_runs_without_a_reference(sql_rewards):
    completions = [WRONG, "SELECT SUM(nope) FROM order_items", "SELEC 1", "", "SELECT 1"]
    assert call(sql_rewards["sql_valid"], completions) == [1.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("statement", [
    "DELETE FROM orders",
    "DELETE FROM orders WHERE 1 = 1",
    "INSERT INTO orders (order_id) VALUES (99999)",
    "UPDATE products SET unit_price = 0",
    "DROP TABLE orders",
    "CREATE TABLE x (a INT)",
    "REPLACE INTO products (product_id) VALUES (1)",
    "VACUUM",
    f"```sql\n{GOLD};\nDELETE FROM orders;\n```",
    "WITH a AS (SELECT 1) DELETE FROM orders",
])
def test_writes_are_refused_and_the_database_is_unchanged(sql_rewards, db, statement):
    before = digest(db)
    assert call(sql_rewards["sql_exec"], [statement], [GOLD]) == [0.0]
    assert call(sql_rewards["sql_valid"], [statement]) == [0.0]
    assert digest(db) == before
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        assert con.execute("SELECT count(*) FROM orders").fetchone() == (600,)


def test_attach_and_pragma_are_refused(sql_rewards, tmp_path):
    target = tmp_path / "escape.db"
    for statement in (f"ATTACH DATABASE 'file:{target}?mode=rwc' AS x",
                      f"ATTACH '{target}' AS x", "DETACH x", "PRAGMA table_info(orders)",
                      "PRAGMA writable_schema = 1", "SELECT load_extension('/tmp/evil')"):
        assert call(sql_rewards["sql_exec"], [statement], [GOLD]) == [0.0], statement
        assert call(sql_rewards["sql_valid"], [statement]) == [0.0], statement
    assert not target.exists()


def test_a_second_statement_scores_zero_but_prose_does_not(sql_rewards):
    completions = [f"{GOLD}; SELECT 1", f"{GOLD};\nDROP TABLE orders", f"{GOLD}; delete from orders",
                   f"{GOLD};\nWith this query you get the units."]
    assert call(sql_rewards["sql_exec"], completions, [GOLD] * 4) == [0.0, 0.0, 0.0, 1.0]
    assert call(sql_rewards["sql_valid"], completions) == [0.0, 0.0, 0.0, 1.0]


def test_refusal_allows_only_one_select():
    for ok in ("SELECT 1", "WITH a AS (SELECT 1) SELECT * FROM a", "SELECT 1 UNION SELECT 2",
               "(SELECT 1)", FOREVER):
        assert rewards.refusal(ok) is None, ok
    for bad, word in (("DELETE FROM orders", "DELETE"), ("ATTACH 'x.db' AS y", "ATTACH"),
                      ("PRAGMA table_info(orders)", "PRAGMA"), ("VACUUM", "VACUUM"),
                      ("SELECT 1; SELECT 2", "2 statements"), ("VALUES (1)", "VALUES"),
                      ("SELECT readfile('/etc/passwd')", "readfile"), ("BEGIN", "TRANSACTION")):
        reason = rewards.refusal(bad)
        assert reason is not None and reason.startswith("refused") and word in reason, (bad, reason)


def test_both_walls_refuse_on_their_own(db, tmp_path):
    # SqlJudge.run skips the parser check: what stops these then is the authorizer, not mode=ro.
    judge = rewards.safe_judge(db)
    target = tmp_path / "escape.db"
    for statement in ("DELETE FROM orders", f"ATTACH DATABASE '{target}' AS x",
                      "PRAGMA table_info(orders)", "CREATE TEMP TABLE t (a)",
                      "SELECT load_extension('/tmp/evil')"):
        with pytest.raises(rewards.RefusedQuery, match="refused"):
            judge.run(statement)  # the first wall: the parser check, before anything runs
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            SqlJudge.run(judge, statement)
    assert not target.exists()
    assert SqlJudge.run(judge, "SELECT count(*) FROM orders") == [(600,)]
    with pytest.raises(sqlite3.DataError, match="too big"):
        SqlJudge.run(judge, "SELECT length(zeroblob(100000000))")


def test_a_query_that_never_ends_is_cut_off(db):
    funcs, _ = rewards.build({"sql_exec": 1.0, "sql_valid": 1.0}, task="sql", database=db,
                             sql_timeout_s=0.5)
    start = time.monotonic()
    assert call(funcs[0], [FOREVER], [GOLD]) == [0.0]
    assert call(funcs[1], [FOREVER]) == [0.0]
    assert time.monotonic() - start < 30


def test_the_default_timeout_cuts_off_too(db):
    funcs, _ = rewards.build({"sql_exec": 1.0}, task="sql", database=db)
    start = time.monotonic()
    assert call(funcs[0], [f"```sql\n{FOREVER}\n```"], [GOLD]) == [0.0]
    assert time.monotonic() - start < 30


def test_default_database_is_the_sample(tunedeck_home):
    funcs, weights = rewards.build(rewards.default_spec("sql"), task="sql")
    assert [f.__name__ for f in funcs] == ["sql_exec", "format"] and weights == [1.0, 0.2]
    assert call(funcs[0], [GOLD, WRONG], [GOLD, GOLD]) == [1.0, 0.0]


def test_one_judge_is_built_and_references_are_cached(db, monkeypatch):
    made = []
    real = rewards.safe_judge

    def counting(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(rewards, "safe_judge", counting)
    funcs, _ = rewards.build({"sql_exec": 1.0, "sql_valid": 1.0}, task="sql", database=db)
    for _ in range(3):
        call(funcs[0], [GOLD, WRONG], [GOLD, GOLD])
        call(funcs[1], [GOLD])
    assert len(made) == 1
    assert list(made[0]._references) == [GOLD]


# --------------------------------------------------------------------------- answer, label, format


def test_answer_reward():
    (fn,), _ = rewards.build({"answer": 1.0}, task="answer")
    completions = ["3 boxes of 400 is 1,200.\nAnswer: 1,200", "Answer: $1200.00",
                   "The answer is 1200.", "Answer: 1300", "1200", "",
                   [{"role": "assistant", "content": "So.\nFinal answer: 1200"}]]
    assert call(fn, completions, ["1200"] * 7) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_answer_reward_with_a_pattern():
    funcs, _ = rewards.build({"answer": 1.0, "format": 1.0}, task="answer",
                             answer_pattern=r"^#### (.+)$")
    completions = ["work\n#### 42", "Answer: 42", "#### 41\n#### 42"]
    assert call(funcs[0], completions, ["42"] * 3) == [1.0, 0.0, 1.0]
    assert call(funcs[1], completions) == [1.0, 0.0, 0.0]


def test_label_reward():
    (fn,), _ = rewards.build({"label": 1.0}, task="classification", labels=LABELS)
    completions = ["positive", "Sentiment: Positive.", "It reads as negative overall.",
                   "Answer: neutral", "", "no idea",
                   [{"role": "assistant", "content": "negative"}]]
    refs = ["positive", "positive", "positive", "neutral", "positive", "positive", "negative"]
    assert call(fn, completions, refs) == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("text, want", [
    (GOLD, 1.0),
    (f"{GOLD};", 1.0),
    (f"```sql\n{GOLD}\n```", 1.0),
    (f"```\n{GOLD};\n```\n", 1.0),
    (f"Here is the query:\n```sql\n{GOLD}\n```", 0.5),
    (f"```sql\n{GOLD}\n```\nThis sums the quantities.", 0.5),
    (f"SQL: {GOLD}", 0.5),
    (f"```sql\n{GOLD}\n```\n```sql\n{WRONG}\n```", 0.5),
    (f"{GOLD}; {WRONG}", 0.0),
    (f"```sql\n{GOLD};\nDROP TABLE orders;\n```", 0.0),
    ("SELEC quantity FRM order_items", 0.0),
    ("I cannot write SQL.", 0.0),
    ("", 0.0),
])
def test_sql_format(text, want):
    assert rewards.sql_form(text) == want


@pytest.mark.parametrize("text, want", [
    ("7 + 5 = 12.\nAnswer: 12", 1.0),
    ("Answer: 12.", 1.0),
    ("The answer is 12.", 1.0),
    ("Answer: 12\nLet me double-check that: 7 + 5 = 12.", 0.5),
    ("Answer: 12\nAnswer: 13", 0.0),
    ("12", 0.0),
    ("", 0.0),
])
def test_answer_format(text, want):
    assert rewards.answer_form(text) == want


@pytest.mark.parametrize("text, want", [
    ("positive", 1.0),
    ("Sentiment: positive.", 1.0),
    ("The review is positive because the reviewer loved the battery and the screen.", 0.5),
    ("positive or negative", 0.0),
    ("none of them", 0.0),
    ("", 0.0),
])
def test_label_format(text, want):
    assert rewards.label_form(text, LABELS) == want


def test_a_longer_label_hides_the_shorter_one():
    assert rewards.labels_named("very positive", ("positive", "very positive")) == ["very positive"]
    assert rewards.label_form("very positive", ("positive", "very positive")) == 1.0


def test_completion_text_plain_and_conversational():
    assert rewards.completion_text("x") == "x"
    assert rewards.completion_text(None) == ""
    assert rewards.completion_text([{"role": "assistant", "content": "a"},
                                    {"role": "tool", "content": "b"}]) == "a"
    assert rewards.completion_text({"role": "assistant", "content": "c"}) == "c"


# --------------------------------------------------------------------------- user file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_user_reward_file_is_loaded_and_called(tmp_path, db):
    write(tmp_path / "cfg" / "mine.py",
          "def brevity(completions, reference, **kwargs):\n"
          "    assert 'trainer_state' in kwargs\n"
          "    return [1.0 - len(c) / 100 if r else None for c, r in zip(completions, reference)]\n")
    funcs, weights = rewards.build({"format": 0.2, "mine.py:brevity": 0.5, "sql_exec": 1.0},
                                   task="sql", base_dir=tmp_path / "cfg", database=db)
    assert [f.__name__ for f in funcs] == ["format", "mine_brevity", "sql_exec"]
    assert weights == [0.2, 0.5, 1.0]
    assert call(funcs[1], ["x" * 10, "y"], ["a", ""]) == [0.9, None]


def test_a_plain_function_gets_only_the_arguments_it_names(tmp_path, monkeypatch):
    write(tmp_path / "r.py", "def n(completions):\n    return [len(c) for c in completions]\n")
    monkeypatch.chdir(tmp_path)  # not in base_dir: the current folder is looked at next
    (fn,), _ = rewards.build({"r.py:n": 1.0}, task="text", base_dir=tmp_path / "elsewhere")
    assert call(fn, ["ab", "abc"], ["", ""], extra_column=[1, 2]) == [2.0, 3.0]


def test_user_file_errors_name_the_file_line_and_function(tmp_path):
    write(tmp_path / "ok.py", "x = 1\n\ndef other(**kw):\n    return []\n")
    write(tmp_path / "bad.py", "def f(**kw):\n    return [\n\ndef g(:\n")
    write(tmp_path / "boom.py", "import no_such_module_here\n")
    with pytest.raises(ConfigError, match=r"ok\.py: has no function 'missing'.*defines: other"):
        rewards.build({"ok.py:missing": 1.0}, task="text", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"ok\.py: 'x' is a int, not a function"):
        rewards.build({"ok.py:x": 1.0}, task="text", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"bad\.py, line \d+: syntax error") as err:
        rewards.build({"bad.py:f": 1.0}, task="text", base_dir=tmp_path)
    assert "line 2" in str(err.value) or "line 4" in str(err.value)
    with pytest.raises(ConfigError, match=r"boom\.py: importing it failed \(ModuleNotFoundError"):
        rewards.build({"boom.py:f": 1.0}, task="text", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"no file 'gone\.py'"):
        rewards.build({"gone.py:f": 1.0}, task="text", base_dir=tmp_path)


@pytest.mark.parametrize("body, match", [
    ("return [1.0]", r"returned 1 rewards for 2 completions"),
    ("return 1.0", r"returned a float; return a list"),
    ("return ['a', 1.0]", r"returned 'a' \(str\) at position 0"),
    ("return [float('inf'), 1.0]", r"returned inf"),
    ("raise ValueError('no good')", r"raised ValueError: no good"),
])
def test_a_bad_user_reward_is_a_clear_error(tmp_path, body, match):
    write(tmp_path / "mine.py", f"def f(completions, **kwargs):\n    {body}\n")
    (fn,), _ = rewards.build({"mine.py:f": 1.0}, task="text", base_dir=tmp_path)
    with pytest.raises(TunedeckError, match=match) as err:
        call(fn, ["a", "b"])
    assert "mine.py: reward function f()" in str(err.value)


def test_same_named_user_rewards_stay_apart(tmp_path):
    for folder in ("a", "b"):
        write(tmp_path / folder / "mine.py", f"def f(completions, **kw):\n"
                                             f"    return [{folder!r} == 'a'] * len(completions)\n")
    funcs, _ = rewards.build({"a/mine.py:f": 1.0, "b/mine.py:f": 1.0}, task="text",
                             base_dir=tmp_path)
    assert [f.__name__ for f in funcs] == ["mine_f", "mine_f_2"]
    assert [call(f, ["x"]) for f in funcs] == [[1.0], [0.0]]


# --------------------------------------------------------------------------- spec, build


def test_check_spec_messages(tmp_path):
    marker = tmp_path / "imported"
    write(tmp_path / "mine.py", f"open({str(marker)!r}, 'w').close()\ndef f(**kw):\n    return []\n")
    assert rewards.check_spec({"sql_exec": 1, "mine.py:f": 0.5}, tmp_path) == []
    assert not marker.exists()  # the check never imports the user's file
    cases = [
        (["sql_exec"], "must be a mapping"),
        ({}, "is empty"),
        ({"sql_exce": 1.0}, "did you mean 'sql_exec'"),
        ({"bleu": 1.0}, "path/to/file.py:function_name"),
        ({"sql_exec": "high"}, "weight of 'sql_exec' is 'high'; give a finite number"),
        ({"sql_exec": float("nan")}, "finite number"),
        ({"sql_exec": True}, "finite number"),
        ({"sql_exec": 0, "format": 0.0}, "every weight is 0"),
        ({"mine.txt:f": 1.0}, "is not a .py file"),
        ({"mine.py:": 1.0}, "is not a function name"),
        ({"nothere.py:f": 1.0}, "no file 'nothere.py'"),
    ]
    for spec, fragment in cases:
        problems = rewards.check_spec(spec, tmp_path)
        assert problems and all(p.startswith("rewards: ") for p in problems), spec
        assert any(fragment in p for p in problems), (spec, problems)


def test_check_spec_imports_neither_torch_nor_the_scorers():
    code = ("import sys\nfrom engine.training import rewards\n"
            "assert rewards.check_spec({'sql_exec': 1.0}) == []\n"
            "print(sorted(m for m in ('torch', 'sqlglot', 'engine.evaluation', 'textual') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


def test_build_refuses_rewards_that_do_not_fit_the_task():
    with pytest.raises(ConfigError, match=r"'sql_exec' fits task sql.*task is answer; for answer "
                                          r"use answer, format"):
        rewards.build({"sql_exec": 1.0}, task="answer")
    with pytest.raises(ConfigError, match="'label' fits task classification"):
        rewards.build({"label": 1.0}, task="sql")
    with pytest.raises(ConfigError, match="need the task's labels"):
        rewards.build({"label": 1.0}, task="classification")
    with pytest.raises(ConfigError, match="unknown task 'poetry'"):
        rewards.build({"format": 1.0}, task="poetry")
    with pytest.raises(ConfigError, match="unknown reward 'bleu'"):
        rewards.build({"bleu": 1.0}, task="text")


def test_default_specs():
    assert rewards.default_spec("sql") == {"sql_exec": 1.0, "format": 0.2}
    assert rewards.default_spec("answer") == {"answer": 1.0, "format": 0.2}
    assert rewards.default_spec("classification") == {"label": 1.0, "format": 0.2}
    with pytest.raises(ConfigError, match="no built-in reward"):
        rewards.default_spec("text")
    assert set(rewards.REWARDS) >= {"sql_exec", "sql_valid", "answer", "label", "format"}


def test_score_completions_weights_like_trl(sql_rewards):
    funcs = [sql_rewards["sql_exec"], sql_rewards["format"]]
    rows = rewards.score_completions(funcs, [1.0, 0.2], [QUESTION] * 3,
                                     [GOLD, f"SQL: {WRONG}", GOLD], [GOLD, GOLD, "SELECT * FROM x"])
    assert rows[0] == {"rewards": {"sql_exec": 1.0, "format": 1.0}, "total": pytest.approx(1.2)}
    assert rows[1] == {"rewards": {"sql_exec": 0.0, "format": 0.5}, "total": pytest.approx(0.1)}
    assert rows[2] == {"rewards": {"sql_exec": None, "format": 1.0}, "total": pytest.approx(0.2)}

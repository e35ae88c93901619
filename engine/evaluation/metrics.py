"""Scoring one prediction against its reference, and the aggregate metrics of a column.

Four task kinds, told apart from the data (`detect_task`) or chosen by the user:

- ``sql``: execution accuracy. The prediction and the reference are transpiled with sqlglot from
  the dataset's dialect to SQLite, run read-only against the sample database, and their result
  sets compared (as multisets, or as lists when the reference has ORDER BY). Different SQL text
  with the same rows is correct; a prediction that does not parse is a syntax error, counted apart
  from a query that parses but fails to run.
- ``classification``: the predicted label (the one label word found in the output) against the
  reference; accuracy plus a confusion table.
- ``answer``: chain-of-thought answer accuracy; the final "Answer:" line against the reference
  answer, compared the way self-consistency votes (case, spacing, 1,000 / 1000.0).
- ``text``: exact and normalized match.

Exact and normalized match are reported for every kind. Nothing here imports torch.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError, first_line

TASKS = ("auto", "sql", "classification", "answer", "text")
# Per-example outcomes; only "correct" counts towards accuracy.
STATUSES = ("correct", "wrong", "syntax_error", "exec_error", "no_answer", "reference_error")
NO_LABEL = "(none)"
SQL_START = re.compile(r"^\s*(select|sel|with)\b", re.IGNORECASE)
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
SQL_STATEMENT = re.compile(r"\b(?:select|sel|with)\b.*?(?:;|\n\s*\n|$)", re.IGNORECASE | re.DOTALL)
SQL_TIMEOUT_S = 2.0  # a model's accidental cross join must not stall the evaluation
MAX_ROWS = 10_000


# --------------------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """Case, surrounding quotes / code fences, trailing period and runs of spaces ignored."""
    value = (text or "").strip()
    fenced = FENCE.search(value)
    if fenced and value.startswith("```"):
        value = fenced.group(2)
    value = value.strip().strip("`\"'").strip()
    value = re.sub(r"\s+", " ", value).rstrip(" .;").casefold()
    return value


def exact_match(prediction: str, reference: str) -> bool:
    return (prediction or "").strip() == (reference or "").strip()


def normalized_match(prediction: str, reference: str) -> bool:
    return normalize_text(prediction) == normalize_text(reference)


def answer_match(prediction: str | None, reference: str) -> bool:
    """Answers equal the way self-consistency votes: 1,000 = 1000.0 = $1000, case ignored."""
    from engine.strategies import normalize_answer

    if prediction is None or not str(prediction).strip():
        return False
    return normalize_answer(str(prediction)) == normalize_answer(str(reference))


# --------------------------------------------------------------------------- classification


def find_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a free-text output names: the whole output if it is a label, else the one label
    word it mentions first (so "Sentiment: positive." and "It is positive" both read as
    positive)."""
    value = normalize_text(text)
    by_norm = {normalize_text(label): label for label in labels}
    if value in by_norm:
        return by_norm[value]
    best: tuple[int, str] | None = None
    for norm, label in by_norm.items():
        if not norm:
            continue
        match = re.search(rf"(?<!\w){re.escape(norm)}(?!\w)", value)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), label)
    return best[1] if best else None


@dataclass
class ConfusionTable:
    labels: list[str]  # row/column order; NO_LABEL last when some output named no label
    counts: dict[str, dict[str, int]]  # counts[reference][predicted]

    @property
    def total(self) -> int:
        return sum(sum(row.values()) for row in self.counts.values())

    @property
    def accuracy(self) -> float:
        total = self.total
        right = sum(self.counts.get(label, {}).get(label, 0) for label in self.labels)
        return right / total if total else 0.0

    def recall(self, label: str) -> float:
        row = self.counts.get(label, {})
        n = sum(row.values())
        return row.get(label, 0) / n if n else 0.0

    def precision(self, label: str) -> float:
        n = sum(row.get(label, 0) for row in self.counts.values())
        return self.counts.get(label, {}).get(label, 0) / n if n else 0.0

    def rows(self) -> list[list[str]]:
        """A printable table: header, then one row per reference label (columns: predicted)."""
        out = [["reference \\ predicted", *self.labels]]
        for ref in self.labels:
            if ref == NO_LABEL:
                continue
            out.append([ref, *(str(self.counts.get(ref, {}).get(p, 0)) for p in self.labels)])
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "counts": self.counts, "accuracy": self.accuracy}


def confusion_table(pairs: Iterable[tuple[str, str | None]],
                    labels: Sequence[str] = ()) -> ConfusionTable:
    """Counts of (reference, predicted) pairs; a prediction naming no label counts as NO_LABEL."""
    pairs = [(ref, pred if pred is not None else NO_LABEL) for ref, pred in pairs]
    order = list(dict.fromkeys([*labels, *sorted({r for r, _ in pairs}),
                                *sorted({p for _, p in pairs if p != NO_LABEL})]))
    if any(p == NO_LABEL for _, p in pairs):
        order.append(NO_LABEL)
    counts: dict[str, dict[str, int]] = {}
    for ref, pred in pairs:
        row = counts.setdefault(ref, {})
        row[pred] = row.get(pred, 0) + 1
    return ConfusionTable(order, counts)


# --------------------------------------------------------------------------- SQL


def extract_sql(text: str) -> str:
    """The SQL in a model's output: the last ```sql block, else the first SELECT/WITH statement
    (after any "SQL:" or "Answer:" cue), else the text itself."""
    text = (text or "").strip()
    blocks = [m.group(2).strip() for m in FENCE.finditer(text) if m.group(2).strip()]
    sql_blocks = [b for b in blocks if SQL_START.match(b)]
    if sql_blocks:
        return sql_blocks[-1].rstrip(";").strip()
    match = SQL_STATEMENT.search(text)
    if match:
        return match.group(0).strip().rstrip(";").strip()
    return text.rstrip(";").strip()


class SqlSyntaxError(TunedeckError):
    """A query that does not parse in its dialect (or in SQLite after transpiling)."""


def transpile_sql(sql: str, dialect: str = "teradata") -> str:
    """One statement of `dialect` as SQLite; `SqlSyntaxError` when it does not parse."""
    import sqlglot
    from sqlglot.errors import ErrorLevel, ParseError, TokenError

    if not sql.strip():
        raise SqlSyntaxError("empty query")
    try:
        out = sqlglot.transpile(sql, read=dialect, write="sqlite",
                                unsupported_level=ErrorLevel.IGNORE)
    except (ParseError, TokenError) as err:
        raise SqlSyntaxError(first_line(err, default=type(err).__name__)) from None
    except RecursionError:
        # A small model's runaway COALESCE(COALESCE(…)) nests deeper than the parser recurses.
        raise SqlSyntaxError("nested too deeply to parse") from None
    except Exception as err:  # any other sqlglot failure on odd model output
        raise SqlSyntaxError(f"{type(err).__name__}: {first_line(err)}") from None
    statements = [s for s in out if s.strip()]
    if len(statements) != 1:
        raise SqlSyntaxError(f"expected one statement, got {len(statements)}")
    return statements[0]


def _has_order_by(sql: str) -> bool:
    """Whether the outermost query orders its rows (then row order is part of the answer)."""
    import sqlglot

    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (Exception, RecursionError):
        return bool(re.search(r"\border\s+by\b", sql, re.IGNORECASE))
    return tree.args.get("order") is not None


def _cell(value: Any) -> Any:
    # 12.5 and 12.50000000001 are the same money; 3 and 3.0 the same count.
    if isinstance(value, float):
        rounded = round(value, 6)
        return int(rounded) if rounded.is_integer() else rounded
    return value


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


@dataclass
class SqlOutcome:
    status: str  # "correct" | "wrong" | "syntax_error" | "exec_error" | "reference_error"
    detail: str = ""
    sqlite: str = ""  # the prediction as run
    rows: int | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"


class SqlJudge:
    """Runs predictions and references against one SQLite database and compares result sets.

    The connection is read-only (a model's DELETE cannot damage the sample), each query has a
    time limit, and reference results are computed once.
    """

    def __init__(self, db_path: Path | str | None = None, dialect: str = "teradata",
                 timeout_s: float = SQL_TIMEOUT_S) -> None:
        if db_path is None:
            from engine.data import sql_sample_db

            db_path = sql_sample_db()
        self.db_path = Path(db_path)
        if not self.db_path.is_file():
            raise TunedeckError(f"{self.db_path}: no such database file.")
        self.dialect = dialect
        self.timeout_s = timeout_s
        self._con: sqlite3.Connection | None = None
        self._references: dict[str, tuple[Any, bool] | str] = {}

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            # check_same_thread off: a TUI worker thread builds the judge, another may use it.
            self._con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True,
                                        check_same_thread=False)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def run(self, sqlite_sql: str) -> list[tuple]:
        """Rows of one SQLite query (raises sqlite3.Error, or TimeoutError past the limit)."""
        con = self._connection()
        deadline = time.monotonic() + self.timeout_s
        timed_out = False

        def check() -> int:
            nonlocal timed_out
            timed_out = time.monotonic() > deadline
            return 1 if timed_out else 0

        con.set_progress_handler(check, 10_000)
        try:
            cursor = con.execute(sqlite_sql)
            rows = cursor.fetchmany(MAX_ROWS + 1)
        except sqlite3.OperationalError:
            if timed_out:
                raise TimeoutError(f"the query ran longer than {self.timeout_s:g} s") from None
            raise
        finally:
            con.set_progress_handler(None, 0)
        if len(rows) > MAX_ROWS:
            raise sqlite3.OperationalError(f"more than {MAX_ROWS} rows")
        return [tuple(_cell(v) for v in row) for row in rows]

    def _result(self, sql: str) -> tuple[Any, bool]:
        sqlite_sql = transpile_sql(sql, self.dialect)
        rows = self.run(sqlite_sql)
        ordered = _has_order_by(sqlite_sql)
        return (rows if ordered else Counter(rows)), ordered

    def reference(self, sql: str) -> tuple[Any, bool] | str:
        """The reference's result (and whether order matters), or the error text."""
        if sql not in self._references:
            try:
                self._references[sql] = self._result(sql)
            except (TunedeckError, sqlite3.Error, TimeoutError) as err:
                self._references[sql] = str(err)
        return self._references[sql]

    def judge(self, prediction_sql: str, reference_sql: str) -> SqlOutcome:
        reference = self.reference(reference_sql)
        if isinstance(reference, str):
            return SqlOutcome("reference_error", f"the reference query fails: {reference}")
        expected, ordered = reference
        try:
            sqlite_sql = transpile_sql(prediction_sql, self.dialect)
        except SqlSyntaxError as err:
            return SqlOutcome("syntax_error", str(err))
        try:
            rows = self.run(sqlite_sql)
        except sqlite3.Error as err:
            status = "syntax_error" if "syntax error" in str(err) else "exec_error"
            return SqlOutcome(status, str(err), sqlite_sql)
        except TimeoutError as err:
            return SqlOutcome("exec_error", str(err), sqlite_sql)
        got = rows if ordered else Counter(rows)
        if got == expected:
            return SqlOutcome("correct", "", sqlite_sql, len(rows))
        want = len(expected) if ordered else sum(expected.values())
        if len(rows) != want:
            detail = f"{_rows(len(rows))}, expected {want}"
        elif ordered and Counter(rows) == Counter(expected):
            detail = "the right rows in the wrong order"
        else:
            detail = f"{_rows(len(rows))} as expected, but different values"
        return SqlOutcome("wrong", detail, sqlite_sql, len(rows))


# --------------------------------------------------------------------------- tasks


def detect_task(examples: Sequence[Any]) -> str:
    """The task kind the data implies: answers → "answer", SQL completions → "sql", a few labels
    repeated → "classification", else "text"."""
    if not examples:
        return "text"
    if all(str(getattr(e, "answer", "") or "").strip() for e in examples):
        return "answer"
    completions = [str(getattr(e, "completion", "") or "").strip() for e in examples]
    if all(SQL_START.match(c) for c in completions):
        return "sql"
    distinct = set(completions)
    if (len(distinct) <= 20 and len(examples) >= 2 * len(distinct)
            and all(len(c.split()) <= 3 for c in distinct)):
        return "classification"
    return "text"


def reference_of(example: Any, task: str) -> str:
    """What a prediction is compared with: the answer for answer tasks, else the completion."""
    if task == "answer":
        answer = str(getattr(example, "answer", "") or "").strip()
        if answer:
            return answer
        from engine.strategies import extract_answer

        completion = str(getattr(example, "completion", "") or "")
        return extract_answer(completion) or completion.strip()
    return str(getattr(example, "completion", "") or "").strip()


@dataclass
class Score:
    final: str | None  # the answer extracted from the output (label, SQL, number, text)
    status: str  # one of STATUSES
    exact: bool = False
    normalized: bool = False
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.status == "correct"


def final_answer(task: str, output: str, labels: Sequence[str] = (),
                 answer_pattern: str | None = None) -> str | None:
    """The part of a model's output that is scored (and voted on by self-consistency)."""
    from engine.strategies import extract_answer

    if task == "answer":
        return extract_answer(output, answer_pattern)
    if task == "sql":
        sql = extract_sql(output)
        return sql or None
    if task == "classification":
        answer = extract_answer(output, answer_pattern)
        label = find_label(answer, labels) if answer else None
        return label or find_label(output, labels)
    answer = extract_answer(output, answer_pattern)
    return (answer if answer is not None else output).strip()


def score(task: str, output: str, reference: str, *, labels: Sequence[str] = (),
          judge: SqlJudge | None = None, final: str | None = None,
          answer_pattern: str | None = None) -> Score:
    """Score one output. `final` overrides the extracted answer (self-consistency's vote)."""
    if final is None:
        final = final_answer(task, output, labels, answer_pattern)
    exact = exact_match(final or "", reference)
    normalized = normalized_match(final or "", reference)
    if final is None or not str(final).strip():
        return Score(None, "no_answer", exact, normalized, "no answer found in the output")
    if task == "sql":
        if judge is None:
            raise TunedeckError("SQL execution accuracy needs a database (SqlJudge).")
        outcome = judge.judge(final, reference)
        return Score(final, outcome.status, exact, normalized, outcome.detail)
    if task == "answer":
        ok = answer_match(final, reference)
    elif task == "classification":
        ok = normalize_text(final) == normalize_text(reference)
    else:
        ok = normalized
    return Score(final, "correct" if ok else "wrong", exact, normalized)


# --------------------------------------------------------------------------- aggregates


@dataclass
class ColumnMetrics:
    """The numbers of one matrix column over the examples it scored."""

    n: int = 0
    accuracy: float = 0.0  # the task's metric: execution / label / answer accuracy, or match
    exact_match: float = 0.0
    normalized_match: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    prompt_tokens: float = 0.0  # mean per query
    completion_tokens: float = 0.0
    latency_s: float = 0.0  # mean per query (batched: the batch's time shared out)
    loss: float | None = None  # mean completion loss of the reference (token-weighted)
    perplexity: float | None = None
    confusion: ConfusionTable | None = None

    @property
    def syntax_errors(self) -> int:
        return self.statuses.get("syntax_error", 0)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "confusion"}
        out["syntax_errors"] = self.syntax_errors
        if self.confusion is not None:
            out["confusion"] = self.confusion.as_dict()
        return out


def aggregate(rows: Sequence[dict[str, Any]], task: str,
              labels: Sequence[str] = ()) -> ColumnMetrics:
    """Metrics over per-example result rows (the dicts `runner` caches)."""
    import math

    n = len(rows)
    if not n:
        return ColumnMetrics()
    scorable = [r for r in rows if r["status"] != "reference_error"]
    denom = len(scorable) or 1
    statuses = Counter(r["status"] for r in rows)
    metrics = ColumnMetrics(
        n=n,
        accuracy=sum(r["status"] == "correct" for r in scorable) / denom,
        exact_match=sum(bool(r.get("exact")) for r in scorable) / denom,
        normalized_match=sum(bool(r.get("normalized")) for r in scorable) / denom,
        statuses=dict(sorted(statuses.items())),
        prompt_tokens=sum(r.get("prompt_tokens", 0) for r in rows) / n,
        completion_tokens=sum(r.get("completion_tokens", 0) for r in rows) / n,
        latency_s=sum(r.get("latency_s", 0.0) for r in rows) / n,
    )
    losses = [(r["loss"], r.get("loss_tokens", 1)) for r in rows if r.get("loss") is not None]
    if losses:
        tokens = sum(t for _, t in losses) or 1
        metrics.loss = sum(loss * t for loss, t in losses) / tokens
        metrics.perplexity = math.exp(min(metrics.loss, 50.0))
    if task == "classification":
        metrics.confusion = confusion_table(
            [(r["reference"], r.get("final")) for r in scorable], labels)
    return metrics

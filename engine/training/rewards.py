"""Reward functions for GRPO (TRL's `GRPOTrainer`), built from the evaluation's scorers.

A `rewards:` mapping names each reward and its weight: built-in names (`REWARDS`) or a function in
the user's own Python file, `"path/to/file.py:function_name"`. `build()` turns the mapping into
the callables and weights TRL takes (`GRPOTrainer(reward_funcs=...)`,
`GRPOConfig(reward_weights=...)`). TRL calls each as `f(prompts=, completions=, completion_ids=,
**dataset_columns, trainer_state=, ...)`; the built-ins read the dataset column `reference` (the
gold query, answer or label) and take plain or conversational completions. A reward that cannot
judge a row (the reference query itself fails) returns None, which TRL counts as missing.

The SQL rewards run the model's text against a database, so only one SELECT (or WITH ... SELECT)
statement is ever executed: sqlglot refuses any other statement type before it runs, a `sqlite3`
authorizer denies writes, ATTACH, PRAGMA and dangerous functions (load_extension, readfile, ...)
as a second wall, the connection stays read-only, and the judge's time limit cuts off a query that
never ends. A completion with a second statement after its query, or a refused or failed query,
scores 0.0.

A reward from a file RUNS THE USER'S OWN CODE in the training process, with the user's rights. It
is loaded only by `build()`, only from a file the config names; `check_spec()` never imports it.
Nothing here imports torch, and the scorers load only when `build()` needs them.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import inspect
import math
import numbers
import re
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, TunedeckError, first_line

REWARDS: dict[str, str] = {
    "sql_exec": "1.0 when the completion's SQL returns the reference query's rows, else 0.0",
    "sql_valid": "1.0 when the completion's SQL parses and runs (softer shaping), else 0.0",
    "answer": "1.0 when the final answer (\"Answer: ...\") matches the reference, else 0.0",
    "label": "1.0 when the label the completion names is the reference label, else 0.0",
    "format": "one query / answer / label, then stop: 1.0; with other text around it: 0.5; "
              "none, or several: 0.0",
}
FITS: dict[str, tuple[str, ...]] = {  # the tasks each built-in scores; `format` adapts
    "sql_exec": ("sql",), "sql_valid": ("sql",), "answer": ("answer",),
    "label": ("classification",), "format": ("sql", "answer", "classification"),
}
TASKS = ("sql", "answer", "classification", "text")
FILE_FORM = "path/to/file.py:function_name"
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
MAX_VALUE_BYTES = 10_000_000  # zeroblob(1e9) would allocate before the time limit could act
LABEL_SLACK_WORDS = 3  # "Sentiment: positive." is a label; a paragraph around it is not
NEXT_STATEMENT = re.compile(r";\s*(?=(?:select|sel|with|insert|update|delete|drop|create|alter|"
                            r"replace|attach|detach|pragma|vacuum)\b)", re.IGNORECASE)
SQL_FENCED = re.compile(r"```[ \t]*(?:sql)?[ \t]*\n(.*?)```", re.IGNORECASE | re.DOTALL)
_BANNED_NODES = ("Insert", "Update", "Delete", "Drop", "Create", "Alter", "Merge", "Command",
                 "Pragma", "Attach", "Detach", "Transaction", "Commit", "Rollback")


# --------------------------------------------------------------------------- spec


def _split_file_key(key: str) -> tuple[str, str]:
    path, _, function = key.rpartition(":")  # the last colon: a Windows "C:\..." keeps its drive
    return path, function


def resolve_file(path_text: str, base_dir: Path | str | None = None) -> Path | None:
    """A reward file named in a config: absolute as given; relative against the config's folder
    (`base_dir`), then the current directory; None when neither holds it."""
    path = Path(path_text).expanduser()
    folders = [] if path.is_absolute() else [Path(base_dir)] if base_dir is not None else []
    for candidate in [folder / path for folder in folders] + [Path.cwd() / path]:
        if candidate.is_file():
            return candidate
    return None


def pinned_key(key: str) -> str:
    """A `file.py:function` key with the file made absolute (found as `resolve_file` finds it);
    built-in names, and files not found (validation names them), as they are."""
    path, function = _split_file_key(key)
    if not path.endswith(".py"):
        return key
    found = resolve_file(path)
    return f"{found.resolve()}:{function}" if found is not None else key


def check_spec(spec: Any, base_dir: Path | str | None = None) -> list[str]:
    """Problems with a `rewards:` mapping, each saying the fix; imports no user code and no
    torch, so config validation can call it."""
    known = f"one of {', '.join(REWARDS)}, or your own function as '{FILE_FORM}'"
    if not isinstance(spec, Mapping):
        return [f"rewards: must be a mapping of reward name to weight (e.g. {{sql_exec: 1.0, "
                f"format: 0.2}}), not {type(spec).__name__}"]
    if not spec:
        return [f"rewards: is empty; name at least one reward with a weight: {known}"]
    problems = []
    for key, weight in spec.items():
        if not isinstance(key, str) or not key.strip():
            problems.append(f"rewards: {key!r} is not a reward name; use {known}")
            continue
        path_text, function = _split_file_key(key)
        if ":" not in key and key not in REWARDS:
            close = difflib.get_close_matches(key, REWARDS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(f"rewards: unknown reward '{key}'; {hint}use {known}")
        elif ":" in key and not path_text.endswith(".py"):
            problems.append(f"rewards: '{key}': a reward from a file is written '{FILE_FORM}', "
                            f"and '{path_text}' is not a .py file")
        elif ":" in key and not function.isidentifier():
            problems.append(f"rewards: '{key}': '{function}' is not a function name; write "
                            f"'{FILE_FORM}'")
        elif ":" in key and resolve_file(path_text, base_dir) is None:
            where = f"{base_dir}, then the current folder" if base_dir else "the current folder"
            problems.append(f"rewards: '{key}': no file '{path_text}' (a relative path is looked "
                            f"up in {where}); fix the path")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) \
                or not math.isfinite(weight):
            problems.append(f"rewards: the weight of '{key}' is {weight!r}; give a finite "
                            "number (e.g. 1.0)")
    if all(isinstance(w, numbers.Real) and not isinstance(w, bool) and w == 0
           for w in spec.values()):
        problems.append("rewards: every weight is 0, so nothing would be learned; give at least "
                        "one reward a non-zero weight")
    return problems


def default_spec(task: str) -> dict[str, float]:
    """The rewards a task trains on unless the config names its own."""
    main = {"sql": "sql_exec", "answer": "answer", "classification": "label"}.get(task)
    if main is None:
        raise ConfigError(f"rewards: task '{task}' has no built-in reward (they fit sql, answer "
                          f"and classification); name your own: rewards: {{'{FILE_FORM}': 1.0}}")
    return {main: 1.0, "format": 0.2}


# --------------------------------------------------------------------------- SQL safety


def refusal(sqlite_sql: str) -> str | None:
    """Why a SQLite query may not run (anything but one SELECT / WITH ... SELECT, or a denied
    function), or None when it may."""
    import sqlglot
    from sqlglot import exp

    try:
        trees = [t for t in sqlglot.parse(sqlite_sql, read="sqlite") if t is not None]
    except (Exception, RecursionError) as err:
        return f"refused: it does not parse as SQLite ({first_line(err, 120)})"
    if len(trees) != 1:
        return f"refused: {len(trees)} statements; only one SELECT runs"
    tree = trees[0]
    inner = tree.this if isinstance(tree, exp.Subquery) else tree
    node = inner if not isinstance(inner, (exp.Select, exp.SetOperation)) else tree.find(
        *(getattr(exp, n) for n in _BANNED_NODES if hasattr(exp, n)))
    if node is not None:
        kind = node.this if isinstance(node, exp.Command) else type(node).__name__
        return f"refused: {str(kind).upper()}; only one SELECT statement runs"
    for call in tree.find_all(exp.Anonymous):
        if str(call.name).casefold() in DENIED_FUNCTIONS:
            return f"refused: it calls {call.name}()"
    return None


class RefusedQuery(sqlite3.DatabaseError):
    """A query the reward will not run (a sqlite3 error, so the judge scores it as failed)."""


def _authorize(action: int, _arg1: Any, arg2: Any, _db: Any, _source: Any) -> int:
    # An allow-list (read, select, call a function): writes, ATTACH, PRAGMA, DDL and
    # transactions are denied even if one got past the parser check.
    if action == sqlite3.SQLITE_FUNCTION:
        denied = str(arg2 or "").casefold() in DENIED_FUNCTIONS
        return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK
    allowed = (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, getattr(sqlite3, "SQLITE_RECURSIVE", 33))
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


@functools.cache
def _safe_judge_class() -> type:
    from engine.evaluation.metrics import SqlJudge

    class SafeSqlJudge(SqlJudge):
        """SqlJudge for model text: one SELECT only, behind an authorizer and size limits."""

        def _connection(self) -> sqlite3.Connection:
            fresh = self._con is None
            con = super()._connection()
            if fresh:
                con.set_authorizer(_authorize)
                con.setlimit(getattr(sqlite3, "SQLITE_LIMIT_ATTACHED", 7), 0)
                con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            return con

        def run(self, sqlite_sql: str) -> list[tuple]:
            reason = refusal(sqlite_sql)
            if reason:
                raise RefusedQuery(reason)
            return super().run(sqlite_sql)

    return SafeSqlJudge


def safe_judge(database: Path | str | None = None, dialect: str = "teradata",
               timeout_s: float | None = None) -> Any:
    """A `SqlJudge` (default: the shipped sample database) that runs only single SELECTs."""
    from engine.evaluation.metrics import SQL_TIMEOUT_S

    return _safe_judge_class()(database, dialect, SQL_TIMEOUT_S if timeout_s is None else timeout_s)


# --------------------------------------------------------------------------- built-ins


def completion_text(completion: Any) -> str:
    """The text of a plain completion or of a conversational one (its assistant messages)."""
    if completion is None or isinstance(completion, str):
        return completion or ""
    parts = []
    for message in [completion] if isinstance(completion, Mapping) else completion:
        if isinstance(message, Mapping) and message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") if isinstance(message, Mapping) else message
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            content = "".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p)
                              for p in content)
        parts.append("" if content is None else str(content))
    return "\n".join(parts)


def _references(reference: Any, n: int, name: str) -> list[str]:
    if reference is None:
        raise TunedeckError(f"reward {name}: the dataset has no 'reference' column; each prompt "
                            "needs its gold query, answer or label there")
    refs = [reference] * n if isinstance(reference, str) else list(reference)
    if len(refs) != n:
        raise TunedeckError(f"reward {name}: {len(refs)} references for {n} completions; give "
                            "one 'reference' per prompt")
    return ["" if r is None else str(r) for r in refs]


def _trivial(rest: str) -> bool:
    return not rest.strip(" \t\r\n;.`")


def _parses(sql: str, dialect: str) -> bool:
    from engine.evaluation import metrics as m

    try:
        return bool(m.SQL_START.match(sql)) and bool(m.transpile_sql(sql, dialect))
    except m.SqlSyntaxError:
        return False


def second_statement(text: str, dialect: str = "teradata") -> bool:
    """Whether a statement follows the first one after a ';' ("SELECT 1; DROP TABLE t"); prose
    such as "; with this query ..." does not count."""
    import sqlglot

    for match in list(NEXT_STATEMENT.finditer(text))[:8]:
        chunk = re.split(r";|\n\s*\n", text[match.end():], maxsplit=1)[0]
        try:
            if sqlglot.parse_one(chunk, read=dialect) is not None:
                return True
        except (Exception, RecursionError):
            continue
    return False


def sql_form(text: str, dialect: str = "teradata") -> float:
    """1.0: the completion is one statement (optionally in one ```sql fence), nothing after it;
    0.5: one statement with prose around it; 0.0: none, one that does not parse, or several."""
    from engine.evaluation.metrics import extract_sql

    text = text.strip()
    if second_statement(text, dialect):
        return 0.0
    fenced = SQL_FENCED.match(text)
    body = fenced.group(1) if fenced and _trivial(text[fenced.end():]) else text
    if "```" not in body and _parses(body.strip().rstrip(";").strip(), dialect):
        return 1.0
    return 0.5 if _parses(extract_sql(text), dialect) else 0.0


def answer_form(text: str, pattern: str | None = None) -> float:
    """1.0: exactly one final answer, nothing after it; 0.5: one, with text after; 0.0: none or
    several."""
    from engine.strategies import ANSWER_LINE, ANSWER_PHRASE, extract_answer

    if pattern:
        matches = list(re.finditer(pattern, text, re.MULTILINE))
    else:
        matches = list(ANSWER_LINE.finditer(text)) or list(ANSWER_PHRASE.finditer(text))
    if len(matches) != 1 or not extract_answer(text, pattern):
        return 0.0
    return 1.0 if _trivial(text[matches[0].end():]) else 0.5


def labels_named(text: str, labels: Sequence[str]) -> list[str]:
    """The distinct labels a text mentions; a longer label hides a shorter one inside it ("very
    positive" is not also "positive")."""
    from engine.evaluation.metrics import normalize_text

    value, found = normalize_text(text), []
    for label in sorted(labels, key=lambda item: len(normalize_text(item)), reverse=True):
        pattern = rf"(?<!\w){re.escape(normalize_text(label))}(?!\w)"
        if normalize_text(label) and re.search(pattern, value):
            found.append(label)
            value = re.sub(pattern, " ", value)
    return found


def label_form(text: str, labels: Sequence[str]) -> float:
    """1.0: one label and at most a few words besides; 0.5: one label in longer text; 0.0: no
    label, or several."""
    found = labels_named(text, labels)
    if len(found) != 1:
        return 0.0
    return 1.0 if len(text.split()) <= len(found[0].split()) + LABEL_SLACK_WORDS else 0.5


def _named(name: str, fn: Callable) -> Callable:
    fn.__name__ = fn.__qualname__ = name  # TRL logs each reward under its __name__
    return fn


def _builtin(name: str, task: str, judge: Any, dialect: str, labels: Sequence[str],
             pattern: str | None) -> Callable:
    from engine.evaluation import metrics as m

    def sql_exec(text: str, ref: str) -> float | None:
        if second_statement(text, dialect):
            return 0.0
        outcome = judge.judge(m.extract_sql(text), ref)
        return None if outcome.status == "reference_error" else float(outcome.correct)

    def sql_valid(text: str, _ref: str) -> float:
        try:
            judge.run(m.transpile_sql(m.extract_sql(text), dialect))
        except (m.SqlSyntaxError, sqlite3.Error, TimeoutError):
            return 0.0
        return 0.0 if second_statement(text, dialect) else 1.0

    def answer(text: str, ref: str) -> float:
        return float(m.answer_match(m.final_answer("answer", text, answer_pattern=pattern), ref))

    def label(text: str, ref: str) -> float:
        found = m.final_answer("classification", text, labels, pattern)
        return float(found is not None and m.normalize_text(found) == m.normalize_text(ref))

    def form(text: str, _ref: str) -> float:
        if task == "sql":
            return sql_form(text, dialect)
        return answer_form(text, pattern) if task == "answer" else label_form(text, labels)

    one = {"sql_exec": sql_exec, "sql_valid": sql_valid, "answer": answer, "label": label,
           "format": form}[name]

    def reward(prompts: Any = None, completions: Sequence[Any] = (), reference: Any = None,
               **_: Any) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        if name in ("sql_valid", "format"):
            refs = [""] * len(texts)
        else:
            refs = _references(reference, len(texts), name)
        return [one(text, ref) for text, ref in zip(texts, refs, strict=True)]

    return _named(name, reward)


# --------------------------------------------------------------------------- user file


def _load_user(key: str, base_dir: Path | str | None) -> tuple[Callable, Path, str]:
    path_text, function = _split_file_key(key)
    path = resolve_file(path_text, base_dir)
    if path is None:
        raise ConfigError(f"rewards: '{key}': no file '{path_text}'; fix the path")
    module_name = "tunedeck_reward_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be loaded as a Python module (rewards: '{key}')")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickle look the module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"{path}, line {err.lineno}: syntax error ({err.msg}); fix the file "
                          f"that rewards: '{key}' names") from None
    except Exception as err:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"{path}: importing it failed ({type(err).__name__}: "
                          f"{first_line(err, 200)}); fix the file that rewards: '{key}' "
                          "names") from err
    fn = getattr(module, function, None)
    if fn is None:
        defined = sorted(n for n, v in vars(module).items()
                         if inspect.isfunction(v) and v.__module__ == module_name)
        raise ConfigError(f"{path}: has no function '{function}' (rewards: '{key}'); it defines: "
                          f"{', '.join(defined) or 'no functions'}")
    if not callable(fn):
        raise ConfigError(f"{path}: '{function}' is a {type(fn).__name__}, not a function "
                          f"(rewards: '{key}')")
    return fn, path, function


def _checked(result: Any, n: int, where: str) -> list[float | None]:
    if hasattr(result, "tolist") and not isinstance(result, (list, tuple)):
        result = result.tolist()  # a numpy array or a torch tensor
    if not isinstance(result, (list, tuple)):
        raise TunedeckError(f"{where} returned a {type(result).__name__}; return a list of "
                            f"numbers (or None), one per completion ({n})")
    if len(result) != n:
        raise TunedeckError(f"{where} returned {len(result)} rewards for {n} completions; "
                            "return one number (or None) per completion")
    for i, value in enumerate(result):
        if value is not None and (not isinstance(value, numbers.Real) or math.isinf(value)):
            raise TunedeckError(f"{where} returned {value!r} ({type(value).__name__}) at "
                                f"position {i}; each reward must be a finite number or None")
    return [None if v is None else float(v) for v in result]


def _user_reward(key: str, base_dir: Path | str | None) -> Callable:
    fn, path, function = _load_user(key, base_dir)
    where = f"{path}: reward function {function}()"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a C callable without a signature: pass everything
        params = {}
    takes_all = not params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def reward(prompts: Any = None, completions: Sequence[Any] = (),
               **kwargs: Any) -> list[float | None]:
        args = {"prompts": prompts, "completions": completions, **kwargs}
        if not takes_all:  # TRL passes many keywords; a plain function gets only those it names
            args = {k: v for k, v in args.items() if k in params}
        try:
            result = fn(**args)
        except Exception as err:
            raise TunedeckError(f"{where} raised {type(err).__name__}: "
                                f"{first_line(err, 200)}") from err
        return _checked(result, len(prompts if prompts is not None else completions), where)

    return _named(re.sub(r"\W+", "_", f"{path.stem}_{function}").strip("_") or "user", reward)


# --------------------------------------------------------------------------- build


def build(spec: Mapping[str, float], *, task: str, database: Path | str | None = None,
          dialect: str = "teradata", labels: Sequence[str] = (),
          answer_pattern: str | None = None, base_dir: Path | str | None = None,
          sql_timeout_s: float | None = None) -> tuple[list[Callable], list[float]]:
    """The reward callables (each `__name__` the reward's name) and their weights, in order."""
    problems = check_spec(spec, base_dir)
    if problems:
        raise ConfigError("\n".join(problems))
    if task not in TASKS:
        raise ConfigError(f"rewards: unknown task '{task}'; use one of {', '.join(TASKS)}")
    fitting = ", ".join(n for n, tasks in FITS.items() if task in tasks) or "no built-in"
    for name in spec:
        if name in FITS and task not in FITS[name]:
            raise ConfigError(f"rewards: '{name}' fits task {' / '.join(FITS[name])}, and this "
                              f"run's task is {task}; for {task} use {fitting} (or your own "
                              f"'{FILE_FORM}')")
    if task == "classification" and not labels and {"label", "format"} & set(spec):
        raise ConfigError("rewards: 'label' and 'format' need the task's labels (the distinct "
                          "references of the data); none were given")
    judge = None
    if {"sql_exec", "sql_valid"} & set(spec):
        judge = safe_judge(database, dialect, sql_timeout_s)  # one judge: references cached
    funcs: list[Callable] = []
    for key in spec:
        if ":" in key:
            fn = _user_reward(key, base_dir)
        else:
            fn = _builtin(key, task, judge, dialect, list(labels), answer_pattern)
        base, n = fn.__name__, 2
        while fn.__name__ in {f.__name__ for f in funcs}:  # TRL's metric keys: keep them apart
            _named(f"{base}_{n}", fn)
            n += 1
        funcs.append(fn)
    return funcs, [float(w) for w in spec.values()]


def score_completions(funcs: Sequence[Callable], weights: Sequence[float], prompts: Sequence[Any],
                      completions: Sequence[Any], references: Sequence[str] | None = None,
                      **columns: Any) -> list[dict[str, Any]]:
    """Each completion's reward per function and the weighted total as TRL sums it (a None or
    NaN reward left out): `[{"rewards": {name: value}, "total": float}, ...]`."""
    if references is not None:
        columns["reference"] = list(references)
    values = [(f.__name__, f(prompts=list(prompts), completions=list(completions), **columns))
              for f in funcs]
    rows = []
    for i in range(len(completions)):
        total = sum(w * v for (_, vals), w in zip(values, weights, strict=True)
                    if (v := vals[i]) is not None and not math.isnan(v))
        rows.append({"rewards": {name: vals[i] for name, vals in values}, "total": float(total)})
    return rows

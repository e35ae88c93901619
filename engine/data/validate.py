"""The validation report, and the one scan that loading and validating share.

`scan()` reads a source row by row and yields usable `Example`s, recording every problem it sees
in an `IssueLog` (capped per kind, so a million bad rows cost a bounded amount of memory; counts
stay exact). Duplicates are found with 12 bytes per row (a 64-bit hash and a line number), sorted
once at the end. `validate()` adds the token-length check when a tokenizer is given.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from engine.data.readers import MAX_LINE_BYTES, Record, Source, open_source
from engine.data.schema import (
    REQUIRED,
    Example,
    apply_mapping,
    check_row,
    detect_schema,
    normalize,
    same_family,
)
from engine.data.tokens import TokenCounter
from engine.errors import TunedeckError

ISSUES_KEPT_PER_CODE = 1000
_SCHEMA_WINDOW = 200  # rows read before the file's schema is decided (majority vote)

# Overlong rows are unusable unless the user chooses what to do with them.
OVERLONG_CHOICES = ("error", "truncate", "skip")

# A record, its row under the column mapping, and that row's layout (or why it has none).
_Read = tuple[Record, dict | None, str | ValueError | None]


@dataclass
class Issue:
    severity: str  # "error": the row is not usable | "warning": usable, but look at it
    code: str  # e.g. invalid_json, missing_field, wrong_type, duplicate, too_long
    line: int  # 1-based line (JSONL/JSON) or row (CSV/Parquet); 0 = the whole file
    field: str | None
    message: str
    fix: str
    file: str = ""
    unit: str = "line"

    def location(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}" if self.unit == "line" else \
            f"{self.file} row {self.line}"

    def __str__(self) -> str:
        where = self.location()
        field_part = f" [{self.field}]" if self.field else ""
        return f"{where}{field_part}: {self.severity}: {self.message} — fix: {self.fix}"


class IssueLog:
    """Issues, kept up to a cap per code; counts are always exact."""

    def __init__(self, file: str, unit: str, cap: int = ISSUES_KEPT_PER_CODE) -> None:
        self.file, self.unit, self.cap = file, unit, cap
        self.issues: list[Issue] = []
        self.counts: Counter[str] = Counter()
        self.has_errors = False  # an error is among `issues` (checked after every loaded row)

    def add(self, severity: str, code: str, line: int, fld: str | None, message: str,
            fix: str) -> None:
        self.counts[code] += 1
        if self.counts[code] <= self.cap:
            self.issues.append(Issue(severity, code, line, fld, message, fix, self.file,
                                     self.unit))
            self.has_errors = self.has_errors or severity == "error"


@dataclass
class Report:
    path: str
    schema: str | None = None
    rows: int = 0  # records read (blank lines are not rows)
    usable: int = 0
    issues: list[Issue] = field(default_factory=list)  # sorted by line; capped per code
    counts: Counter = field(default_factory=Counter)  # exact number of issues per code
    unusable_by_reason: Counter = field(default_factory=Counter)  # code → rows not usable
    duplicates: int = 0
    scanned: int = 0  # rows checked for duplicates: the usable ones, before any length check
    max_len: int | None = None
    tokenizer: str | None = None
    overlong: str = "error"
    seconds: float = 0.0
    unit: str = "line"
    examples: list[Example] = field(default_factory=list, repr=False)  # see validate(keep=)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when no row is unusable by accident: warnings, and rows skipped by an explicit
        choice (`overlong="skip"`), are allowed."""
        return self.usable > 0 and not self.errors

    @property
    def clean(self) -> bool:
        """True when there is nothing at all to report (what `--strict` asks for)."""
        return self.ok and not self.issues

    @property
    def truncated(self) -> bool:
        return sum(self.counts.values()) > len(self.issues)

    def summary(self) -> str:
        unusable = self.rows - self.usable
        parts = [f"{self.usable:,} of {self.rows:,} rows usable"]
        if unusable:
            why = ", ".join(f"{n:,} {code.replace('_', ' ')}"
                            for code, n in self.unusable_by_reason.most_common())
            parts.append(f"{unusable:,} not usable ({why})")
        warn = sum(n for c, n in self.counts.items() if c in _WARNING_CODES)
        if warn:
            parts.append(f"{warn:,} warning{'s' if warn != 1 else ''}")
        schema = f"schema {self.schema}" if self.schema else "schema unknown"
        return f"{self.path}: {schema}; " + "; ".join(parts)


_WARNING_CODES = {"bom", "blank_line", "duplicate", "truncated", "skipped_too_long"}


class Scan:
    """One pass over a source; iterate it for the usable examples, then read `report`."""

    def __init__(self, source: Source, mapping: dict[str, str] | None = None,
                 cancel: Callable[[], bool] | None = None) -> None:
        self.source = source
        self.mapping = mapping
        self.cancel = cancel
        self.log = IssueLog(source.display, source.unit)
        self.report = Report(path=source.display, unit=source.unit)
        # Duplicate detection: 16 bytes per usable row, never the rows themselves.
        self._hashes = array("q")
        self._lines = array("q")

    def _unusable(self, code: str) -> None:
        self.report.unusable_by_reason[code] += 1

    def _read(self, rec: Record) -> _Read:
        """The record, its row under the mapping, and that row's own layout (or why it has
        none): worked out once, as both the schema vote and the row checks need them."""
        if rec.row is None:
            return rec, None, None
        row = apply_mapping(rec.row, self.mapping)
        try:
            return rec, row, detect_schema(row.keys(), row)
        except ValueError as err:
            return rec, row, err

    def __iter__(self) -> Iterator[Example]:
        records = self.source.records()
        window: list[_Read] = []
        votes: Counter[str] = Counter()
        for rec in records:
            read = self._read(rec)
            window.append(read)
            if isinstance(read[2], str):
                votes[read[2]] += 1
                if votes.total() >= _SCHEMA_WINDOW:
                    break
        if votes:
            # The most common layout wins; Counter keeps first-seen order, so ties go to the
            # layout seen first.
            self.report.schema = max(votes, key=lambda k: votes[k])

        for rec, row, own in chain(window, map(self._read, records)):
            if self.cancel is not None and self.cancel():
                raise TunedeckError("cancelled")
            example = self._one(rec, row, own)
            if example is not None:
                yield example
        self._finish()

    def _one(self, rec: Record, row: dict | None, own: str | ValueError | None) -> Example | None:
        log = self.log
        if rec.code:
            log.add(rec.severity, rec.code, rec.line, rec.field, rec.message, rec.fix)
            if rec.code == "blank_line":
                return None
            if rec.code != "bom":  # a BOM is reported, then its line is read as usual
                self.report.rows += 1
                self._unusable(rec.code)
                return None
        if row is None:
            return None
        self.report.rows += 1
        schema = self.report.schema
        if schema is None:
            if isinstance(own, ValueError):
                what, _, fix = str(own).partition("; ")
                log.add("error", "unknown_schema", rec.line, None, what, fix)
                self._unusable("unknown_schema")
                return None
            self.report.schema = schema = own
        # Identity first: nearly every row has the file's layout, and this runs once per row.
        if own is not schema and isinstance(own, str) and not same_family(own, schema):
            need = ", ".join(REQUIRED[schema])
            odd = next((c for c in REQUIRED[own] if c not in REQUIRED[schema]), None)
            log.add("error", "mixed_schema", rec.line, odd,
                    f"row has the '{own}' layout ({', '.join(REQUIRED[own])}) but the file is "
                    f"'{schema}' ({need}), decided by most rows",
                    f"rewrite the row with {need}, or keep each layout in its own file")
            self._unusable("mixed_schema")
            return None
        problems = check_row(row, schema)  # type: ignore[arg-type]
        if problems:
            for code, fld, message, fix in problems:
                log.add("error", code, rec.line, fld, message, fix)
            self._unusable(problems[0][0])
            return None
        example = normalize(row, schema, rec.line)  # type: ignore[arg-type]
        self._hashes.append(hash(example.key()))
        self._lines.append(rec.line)
        self.report.usable += 1
        return example

    def _finish(self) -> None:
        report = self.report
        if report.rows == 0 and not self.log.counts.get("not_utf8"):
            self.log.add("error", "empty_file", 0, None, "the file holds no rows",
                         "add rows, one JSON object per line (or check you opened the right file)")
        report.scanned = len(self._hashes)
        self._find_duplicates()
        report.issues = sorted(self.log.issues, key=lambda i: (i.line, i.severity != "error"))
        report.counts = self.log.counts

    def _find_duplicates(self) -> None:
        if len(self._hashes) < 2:
            return
        import numpy as np

        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        lines = np.frombuffer(self._lines, dtype=np.int64)
        order = np.argsort(hashes, kind="stable")  # lines are ascending: ties keep file order
        sorted_h = hashes[order]
        same = np.flatnonzero(sorted_h[1:] == sorted_h[:-1]) + 1
        if not len(same):
            return
        # The first line of each run of equal hashes is the original.
        run_start = np.zeros(len(sorted_h), dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
        run_start[starts] = starts
        run_start = np.maximum.accumulate(run_start)
        for idx in same:
            line = int(lines[order[idx]])
            first = int(lines[order[run_start[idx]]])
            self.log.add("warning", "duplicate", line, None,
                         f"exact duplicate of {'line' if self.log.unit == 'line' else 'row'} "
                         f"{first}", "remove the repeated row (it weighs twice in training)")
        self.report.duplicates = len(same)


def scan(path: str | Path, mapping: dict[str, str] | None = None, split: str | None = None,
         max_line_bytes: int = MAX_LINE_BYTES, cancel: Callable[[], bool] | None = None) -> Scan:
    return Scan(open_source(path, split, max_line_bytes), mapping, cancel)


def validate(path: str | Path, mapping: dict[str, str] | None = None, split: str | None = None,
             tokenizer: Any = None, max_len: int | None = None, overlong: str = "error",
             max_line_bytes: int = MAX_LINE_BYTES, keep: int = 0,
             progress: Callable[[float], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> Report:
    """Read the whole dataset once and report every problem.

    With a `tokenizer` and `max_len`, rows whose prompt + completion exceed `max_len` tokens are
    reported; `overlong` says what happens to them: "error" (not usable, the default), "truncate"
    or "skip" (explicit choices, reported as warnings). `keep` > 0 keeps that many usable examples
    on `report.examples` (for browsing). Never raises for bad rows; raises `TunedeckError` only
    when the file cannot be opened at all.
    """
    if overlong not in OVERLONG_CHOICES:
        raise TunedeckError(f"overlong must be one of {', '.join(OVERLONG_CHOICES)}")
    start = time.perf_counter()
    sc = scan(path, mapping, split, max_line_bytes, cancel)
    kept: list[Example] = []
    batch: list[Example] = []
    counter = None
    if tokenizer is not None and max_len:
        counter = TokenCounter(tokenizer)
    last = 0.0
    for example in sc:
        if len(kept) < keep:
            kept.append(example)
        if counter is not None:
            batch.append(example)
            if len(batch) >= 512:
                _check_lengths(sc, counter, batch, max_len, overlong)  # type: ignore[arg-type]
                batch = []
        if progress is not None and example.line % 1000 == 0:
            frac = sc.source.fraction()
            if frac - last >= 0.01:
                last = frac
                progress(frac)
    if counter is not None and batch:
        _check_lengths(sc, counter, batch, max_len, overlong)  # type: ignore[arg-type]
    report = sc.report
    report.issues = sorted(sc.log.issues, key=lambda i: (i.line, i.severity != "error"))
    report.max_len, report.overlong = max_len, overlong
    report.tokenizer = getattr(tokenizer, "name_or_path", None) if tokenizer is not None else None
    report.seconds = time.perf_counter() - start
    report.examples = kept
    if progress is not None:
        progress(1.0)
    return report


def _check_lengths(sc: Scan, counter: Any, batch: list[Example], max_len: int,
                   overlong: str) -> None:
    for example, (p, c) in zip(batch, counter.lengths(batch), strict=True):
        total = p + c + counter.overhead
        if total <= max_len:
            continue
        over = total - max_len
        what = (f"prompt + completion is {total:,} tokens ({p:,} + {c:,} + {counter.overhead} "
                f"template), {over:,} over max_len {max_len:,}")
        if overlong == "error":
            sc.log.add("error", "too_long", example.line, "completion", what,
                       "shorten the row, raise --max-len, or choose --overlong truncate/skip")
            sc.report.usable -= 1
            sc._unusable("too_long")
        elif overlong == "truncate":
            sc.log.add("warning", "truncated", example.line, "completion",
                       what + "; it will be truncated", "shorten the row to keep all of it")
        else:
            sc.log.add("warning", "skipped_too_long", example.line, "completion",
                       what + "; skipped (--overlong skip)", "shorten the row to keep it")
            sc.report.usable -= 1
            sc._unusable("skipped_too_long")


def load_examples(path: str | Path, mapping: dict[str, str] | None = None,
                  split: str | None = None, limit: int | None = None,
                  skip_invalid: bool = False) -> list[Example]:
    """Load and normalize a dataset.

    Raises `TunedeckError` naming file, line, field and fix for the first unusable row (nothing
    is dropped silently), or when nothing is usable. `skip_invalid=True` is the explicit choice
    to keep only the usable rows of a damaged file (`validate()` lists what was left out).
    """
    sc = scan(path, mapping, split)
    out: list[Example] = []
    for example in sc:
        out.append(example)
        if limit is not None and len(out) >= limit:
            break
        if not skip_invalid:
            _raise_first_error(sc, path)
    if not skip_invalid:
        _raise_first_error(sc, path)
    if not out:
        first = next((i for i in sorted(sc.log.issues, key=lambda i: i.line)
                      if i.severity == "error"), None)
        detail = f" First problem: {first}" if first else ""
        raise TunedeckError(f"{sc.source.display}: no usable rows.{detail}")
    return out


def _raise_first_error(sc: Scan, path: str | Path) -> None:
    if not sc.log.has_errors:
        return
    errors = [i for i in sc.log.issues if i.severity == "error"]
    if errors:
        first = min(errors, key=lambda i: i.line)
        raise TunedeckError(f"{first}. Run `tunedeck data check {path}` for the full report.")

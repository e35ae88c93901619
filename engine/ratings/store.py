"""Completions, ratings and A/B pairs in the history database (`RatingStore`).

This module opens its own connection so the TUI and the CLI (two processes) can write at once:
WAL lets readers and one writer work together, the busy timeout makes a second writer wait its
turn, and `synchronous=FULL` makes a committed rating survive a crash of the process or the OS.
The tables and records are in `engine.ratings.schema`; the training sets made from the ratings
in `engine.ratings.export`; A/B generation in `engine.ratings.ab`.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError, database_problem
from engine.ratings.export import ExportReport, write_export
from engine.ratings.schema import (
    _UNSET,
    CHOICES,
    SOURCES,
    Completion,
    Pair,
    QueueItem,
    Rating,
    _dumps,
    _loads,
    chatml_messages,
)
from engine.store import Database
from engine.store import utc_now as _now

# --------------------------------------------------------------------------- the store


_COMPLETION_COLS = ("c.id, c.created_at, c.source, c.source_ref, c.prompt, c.messages, "
                    "c.prompt_text, c.completion, c.model, c.adapter, c.run_id, c.template, "
                    "c.strategy, c.params, c.extra, c.try_id, r.thumbs, r.stars, r.ideal, "
                    "r.comment, r.updated_at AS rated_at")
_FROM = "FROM completions c LEFT JOIN ratings r ON r.completion_id = c.id"


def _row_to_completion(row: sqlite3.Row) -> Completion:
    return Completion(
        id=row["id"], created_at=row["created_at"], source=row["source"],
        source_ref=row["source_ref"], prompt=row["prompt"],
        messages=_loads(row["messages"], None), prompt_text=row["prompt_text"],
        completion=row["completion"], model=row["model"], adapter=row["adapter"],
        run_id=row["run_id"], template=row["template"], strategy=_loads(row["strategy"], {}),
        params=_loads(row["params"], {}), extra=_loads(row["extra"], {}), try_id=row["try_id"],
        rating=Rating(thumbs=row["thumbs"], stars=row["stars"], ideal=row["ideal"],
                      comment=row["comment"], updated_at=row["rated_at"]))


def _row_to_pair(row: sqlite3.Row, a: Completion, b: Completion) -> Pair:
    return Pair(id=row["id"], created_at=row["created_at"], a=a, b=b, choice=row["choice"],
                comment=row["comment"], info=_loads(row["info"], {}))


class RatingStore(Database):
    """Completions, ratings and A/B pairs in the history database; safe to share between threads."""

    # FULL: a rating is a person's judgment; a power cut must not lose a committed one.
    SYNCHRONOUS = "FULL"
    TIMEOUT = 30.0
    FOREIGN_KEYS = True

    def _write(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        with self._lock:
            db = self._conn()
            try:
                return db.execute(sql, args)
            except sqlite3.DatabaseError as err:  # busy, read-only, damaged: each says so
                raise TunedeckError(database_problem(err, self.path)) from None

    # ------------------------------------------------------------------ adding completions
    def add_completion(self, *, source: str, prompt: str, completion: str,
                       messages: list[dict[str, str]] | None = None,
                       prompt_text: str | None = None, source_ref: str | None = None,
                       model: str = "", adapter: str | None = None, run_id: str | None = None,
                       template: str | None = None, strategy: dict | None = None,
                       params: dict | None = None, extra: dict | None = None,
                       try_id: int | None = None) -> int:
        """Record a completion to rate; with a `source_ref` already known, returns that row."""
        if source not in SOURCES:
            raise TunedeckError(f"source: {source!r} must be one of {', '.join(SOURCES)}.")
        row = (_now(), source, source_ref, prompt,
               json.dumps(messages, ensure_ascii=False) if messages is not None else None,
               prompt_text if prompt_text is not None else prompt, completion, model or "",
               adapter, run_id, template, _dumps(strategy), _dumps(params), _dumps(extra), try_id)
        with self._lock:
            cur = self._write(
                "INSERT OR IGNORE INTO completions (created_at, source, source_ref, prompt, "
                "messages, prompt_text, completion, model, adapter, run_id, template, strategy, "
                "params, extra, try_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            if cur.rowcount:
                return int(cur.lastrowid)
            found = self._conn().execute("SELECT id FROM completions WHERE source_ref = ?",
                                         (source_ref,)).fetchone()
            return int(found["id"])

    def add_try(self, try_: Any) -> int:
        """A playground try (`engine.store.Try`, or its id) as a completion to rate."""
        if isinstance(try_, int):
            from engine.store import HistoryStore

            with HistoryStore(self.path) as store:
                try_ = store.get_try(try_)
        messages = chatml_messages(try_.prompt_text)
        user = next((m["content"] for m in reversed(messages or []) if m["role"] == "user"),
                    None)
        prompt = user if user is not None else (
            try_.inputs.get("prompt") or try_.inputs.get("instruction") or try_.prompt_text)
        return self.add_completion(
            source="try", source_ref=f"try:{try_.id}", prompt=str(prompt), messages=messages,
            prompt_text=try_.prompt_text, completion=try_.output, model=try_.model,
            adapter=try_.adapter, template=try_.template, strategy=try_.strategy,
            params=try_.params, extra={"inputs": try_.inputs}, try_id=try_.id)

    def import_tries(self, limit: int = 1000) -> list[int]:
        """Every playground try not yet in the rating queue (idempotent)."""
        from engine.store import HistoryStore

        with HistoryStore(self.path) as store:
            tries = store.list_tries(limit=limit)
        return [self.add_try(t) for t in reversed(tries)]

    def import_run_samples(self, run: Any) -> list[int]:
        """A run's sample events (run id, path or RunDir) as completions; idempotent."""
        from engine.training.rundir import RunDir, open_run

        run = run if isinstance(run, RunDir) else open_run(run)
        status = run.read_status()
        ids, per_step = [], Counter()
        for event in run.read_events():
            if event.get("type") != "sample":
                continue
            step = event.get("step")
            index = per_step[step]
            per_step[step] += 1
            prompt = str(event.get("prompt", ""))
            ids.append(self.add_completion(
                source="sample", source_ref=f"run:{run.id}:{step}:{index}", prompt=prompt,
                # The runner trains through the chat template and samples the user turn.
                messages=[{"role": "user", "content": prompt}], prompt_text=prompt,
                completion=str(event.get("completion", "")), model=str(status.get("model", "")),
                adapter=f"{run.id}@{step}", run_id=run.id,
                # Greedy, except GRPO's: sampled in training, each with its rewards.
                params={"temperature": float(event.get("temperature") or 0.0)},
                extra={"step": step, "sample": index, "reference": event.get("reference"),
                       **{k: event[k] for k in ("reward", "rewards") if k in event}}))
        return ids

    def add_pair(self, a_id: int, b_id: int, info: dict | None = None) -> int:
        if a_id == b_id:
            raise TunedeckError("An A/B pair needs two different completions.")
        cur = self._write("INSERT INTO pairs (created_at, a_id, b_id, info) VALUES (?, ?, ?, ?)",
                          (_now(), a_id, b_id, _dumps(info)))
        return int(cur.lastrowid)

    # ------------------------------------------------------------------ rating
    def rate(self, completion_id: int, *, thumbs: int | None = _UNSET,
             stars: int | None = _UNSET, ideal: str | None = _UNSET,
             comment: str | None = _UNSET) -> Rating:
        """Set some of a completion's rating fields (the others keep their values)."""
        if thumbs is not _UNSET and thumbs not in (None, -1, 1):
            raise TunedeckError(f"thumbs: {thumbs!r} must be 1 (up), -1 (down) or None.")
        if stars is not _UNSET and stars is not None and not (
                isinstance(stars, int) and 1 <= stars <= 5):
            raise TunedeckError(f"stars: {stars!r} must be a whole number from 1 to 5.")
        given = {k: v for k, v in (("thumbs", thumbs), ("stars", stars), ("ideal", ideal),
                                   ("comment", comment)) if v is not _UNSET}
        if "ideal" in given and given["ideal"] is not None and not given["ideal"].strip():
            given["ideal"] = None
        columns = ["completion_id", *given, "updated_at"]
        updates = ", ".join(f"{c} = excluded.{c}" for c in [*given, "updated_at"])
        with self._lock:
            if self._conn().execute("SELECT 1 FROM completions WHERE id = ?",
                                    (completion_id,)).fetchone() is None:
                raise TunedeckError(f"No completion with id {completion_id} in {self.path}.")
            self._write(
                f"INSERT INTO ratings ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))}) "
                f"ON CONFLICT(completion_id) DO UPDATE SET {updates}",
                (completion_id, *given.values(), _now()))
            return self.get_completion(completion_id).rating

    def choose(self, pair_id: int, choice: str | None, comment: str | None = _UNSET) -> None:
        """Record the A/B verdict: "a", "b", "tie", or None to clear it."""
        if choice is not None and choice not in CHOICES:
            raise TunedeckError(f"choice: {choice!r} must be a, b or tie.")
        sets, args = ["choice = ?", "updated_at = ?"], [choice, _now()]
        if comment is not _UNSET:
            sets.append("comment = ?")
            args.append(comment)
        cur = self._write(f"UPDATE pairs SET {', '.join(sets)} WHERE id = ?", (*args, pair_id))
        if not cur.rowcount:
            raise TunedeckError(f"No A/B pair with id {pair_id} in {self.path}.")

    # ------------------------------------------------------------------ reading
    def get_completion(self, completion_id: int) -> Completion:
        with self._lock:
            row = self._conn().execute(f"SELECT {_COMPLETION_COLS} {_FROM} WHERE c.id = ?",
                                       (completion_id,)).fetchone()
        if row is None:
            raise TunedeckError(f"No completion with id {completion_id} in {self.path}.")
        return _row_to_completion(row)

    def completion_by_source(self, source_ref: str) -> Completion | None:
        """The completion recorded under `source_ref` (e.g. ``run:<id>:<step>:<i>``), or None."""
        # source_ref is UNIQUE, so SQLite's own index on it answers this without a table scan.
        with self._lock:
            row = self._conn().execute(f"SELECT {_COMPLETION_COLS} {_FROM} WHERE c.source_ref = ?",
                                       (source_ref,)).fetchone()
        return _row_to_completion(row) if row is not None else None

    def completions(self, source: str | None = None) -> list[Completion]:
        sql, args = f"SELECT {_COMPLETION_COLS} {_FROM}", []
        if source:
            sql += " WHERE c.source = ?"
            args.append(source)
        with self._lock:
            rows = self._conn().execute(sql + " ORDER BY c.id", args).fetchall()
        return [_row_to_completion(r) for r in rows]

    def pairs(self, completions: list[Completion] | None = None) -> list[Pair]:
        """Every A/B pair; `completions`: all completions when the caller already holds them."""
        with self._lock:
            rows = self._conn().execute("SELECT * FROM pairs ORDER BY id").fetchall()
        byid = {c.id: c for c in (completions if completions is not None
                                  else self.completions())}
        return [_row_to_pair(r, byid[r["a_id"]], byid[r["b_id"]]) for r in rows]

    def get_pair(self, pair_id: int) -> Pair:
        with self._lock:
            r = self._conn().execute("SELECT * FROM pairs WHERE id = ?", (pair_id,)).fetchone()
            if r is None:
                raise TunedeckError(f"No A/B pair with id {pair_id} in {self.path}.")
            return _row_to_pair(r, self.get_completion(r["a_id"]),
                                self.get_completion(r["b_id"]))

    def queue(self, source: str | None = None, unrated_only: bool = False) -> list[QueueItem]:
        """What the Rate screen walks through, oldest first: single completions and A/B pairs.

        Completions made for an A/B pair appear once, as their pair.
        """
        items: list[QueueItem] = []
        everything = self.completions() if source is None else None  # read once for both
        if source in (None, "ab"):
            items += self.pairs(everything)
        if source != "ab":
            singles = everything if everything is not None else self.completions(source)
            items += [c for c in singles if c.source != "ab"]
        if unrated_only:
            items = [i for i in items if not i.rated]
        return sorted(items, key=lambda i: (i.created_at, 0 if i.kind == "completion" else 1,
                                            i.id))

    def progress(self, source: str | None = None) -> tuple[int, int]:
        """(rated, total) over the queue."""
        items = self.queue(source)
        return sum(1 for i in items if i.rated), len(items)

    def sources(self) -> list[str]:
        with self._lock:
            found = {r[0] for r in self._conn().execute("SELECT DISTINCT source FROM completions")}
        return [s for s in SOURCES if s in found]

    # ------------------------------------------------------------------ exports
    def export(self, fmt: str, out: Path, *, force: bool = False,
               **options: Any) -> ExportReport:
        """Write one training set (see `engine.ratings.export.write_export`)."""
        def rows() -> tuple[list[Completion], list[Pair]]:
            completions = self.completions()
            return completions, self.pairs(completions)

        return write_export(fmt, Path(out), rows, force=force, database=self.path, **options)

"""The history database: every prompt try, in SQLite (WAL) with a schema version and migrations.

The schema version is SQLite's ``PRAGMA user_version``; the migrations are in `engine.migrations`.
Opening a database applies the missing ones in order, each in its own transaction, so an old file
is upgraded in place and a new one is built the same way.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import TunedeckError, database_problem
from engine.migrations import MIGRATIONS, SCHEMA_VERSION, Migration


@dataclass
class Try:
    id: int
    created_at: str
    model: str
    adapter: str | None
    template: str
    template_text: str
    strategy: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    prompt_text: str = ""
    output: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = ("id, created_at, model, adapter, template, template_text, strategy, params, inputs, "
            "prompt_text, output, metrics")
_JSON_FIELDS = ("strategy", "params", "inputs", "metrics")


def utc_now() -> str:
    """The timestamp every table of the database stores: UTC, ISO 8601, whole seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"_unreadable": text}
    return value if isinstance(value, dict) else {"value": value}


def _row_to_try(row: sqlite3.Row) -> Try:
    data = dict(row)
    for name in _JSON_FIELDS:
        data[name] = _loads(data[name])
    return Try(**data)


def migrate(db: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Bring the database to the latest schema; returns the version it is at.

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction and re-reads the version inside
    it, so two processes opening a new or old database at once never apply a step twice.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    latest = len(migrations)

    def version() -> int:
        current = db.execute("PRAGMA user_version").fetchone()[0]
        if current > latest:
            raise TunedeckError(
                f"The history database has schema version {current}, newer than this tunedeck "
                f"understands ({latest}). Upgrade tunedeck, or point TUNEDECK_HOME elsewhere.")
        return current

    while version() < latest:
        with db:  # commits the step, or rolls it back and leaves the previous version intact
            db.execute("BEGIN IMMEDIATE")
            current = version()
            if current < latest:
                migrations[current](db)
                db.execute(f"PRAGMA user_version = {current + 1}")
    return latest


def _enable_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL. On a new file opened by several connections at once, SQLite answers the
    switch with "database is locked" at once, without waiting on the busy timeout: retry it
    within that timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def connect(path: Path, synchronous: str = "NORMAL", timeout: float = 10,
            foreign_keys: bool = False) -> sqlite3.Connection:
    """Open (creating on first use) and migrate the history database in WAL mode, so the TUI and
    the CLI can write at the same time."""
    try:
        paths.ensure_dir(path.parent)
    except OSError as err:
        raise TunedeckError(f"{path.parent}: cannot create the data home "
                            f"({err.strerror or err}): is it read-only? Set TUNEDECK_HOME to a "
                            "writable folder.") from None
    try:
        db = sqlite3.connect(path, check_same_thread=False, timeout=timeout,
                             isolation_level=None)
        db.row_factory = sqlite3.Row
        _enable_wal(db, timeout)
        db.execute(f"PRAGMA synchronous={synchronous}")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
        migrate(db)
    except sqlite3.DatabaseError as err:
        if _cannot_write(err) and path.is_file():
            # A read-only home: reading the history still works; a write says read-only.
            read_only = _connect_read_only(path, timeout)
            if read_only is not None:
                return read_only
        raise TunedeckError(database_problem(err, path)) from None
    return db


def _cannot_write(err: sqlite3.Error) -> bool:
    text = str(err).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _connect_read_only(path: Path, timeout: float) -> sqlite3.Connection | None:
    """The database opened for reading only (``immutable`` when even the WAL index cannot be
    made), or None; one that needs a schema upgrade cannot be read this way."""
    for query in ("mode=ro", "immutable=1"):
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True,
                                 check_same_thread=False, timeout=timeout, isolation_level=None)
            db.row_factory = sqlite3.Row
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError:
            continue
        if version != SCHEMA_VERSION:
            db.close()
            raise TunedeckError(f"{path}: the history database is read-only and has schema "
                                f"version {version}, not {SCHEMA_VERSION}; make it writable once "
                                "so tunedeck can upgrade it.")
        return db
    return None


class Database:
    """One connection to the history database, opened on first use (never at construction:
    screens build their facades eagerly), shared between threads under a lock."""

    SYNCHRONOUS = "NORMAL"
    TIMEOUT = 10.0
    FOREIGN_KEYS = False

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else paths.db_path()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = connect(self.path, synchronous=self.SYNCHRONOUS, timeout=self.TIMEOUT,
                               foreign_keys=self.FOREIGN_KEYS)
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HistoryStore(Database):
    """The history of the prompt lab: its tries (ratings are `engine.ratings.RatingStore`, in the
    same file); safe to share between threads."""

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def add_try(self, *, model: str, adapter: str | None, template: str, template_text: str,
                strategy: dict, params: dict, inputs: dict, prompt_text: str, output: str,
                metrics: dict) -> int:
        row = (utc_now(), model, adapter, template, template_text,
               *(json.dumps(v, ensure_ascii=False, default=str)
                 for v in (strategy, params, inputs)),
               prompt_text, output, json.dumps(metrics, ensure_ascii=False, default=str))
        with self._lock:
            cursor = self._conn().execute(
                "INSERT INTO tries (created_at, model, adapter, template, template_text, "
                "strategy, params, inputs, prompt_text, output, metrics) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return int(cursor.lastrowid)

    def list_tries(self, limit: int = 200, offset: int = 0,
                   search: str | None = None) -> list[Try]:
        """Newest first; `search` matches model, adapter, template, inputs and output."""
        sql = f"SELECT {_COLUMNS} FROM tries"
        args: list[Any] = []
        if search and search.strip():
            like = "%" + search.strip().replace("\\", "\\\\").replace("%", "\\%")\
                .replace("_", "\\_") + "%"
            columns = ("model", "adapter", "template", "inputs", "output")
            sql += " WHERE " + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns)
            args += [like] * len(columns)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self._lock:
            return [_row_to_try(r) for r in self._conn().execute(sql, args).fetchall()]

    def count_tries(self) -> int:
        with self._lock:
            return self._conn().execute("SELECT COUNT(*) FROM tries").fetchone()[0]

    def get_try(self, try_id: int) -> Try:
        with self._lock:
            row = self._conn().execute(f"SELECT {_COLUMNS} FROM tries WHERE id = ?",
                                       (try_id,)).fetchone()
        if row is None:
            raise TunedeckError(f"No try with id {try_id} in {self.path}.")
        return _row_to_try(row)

    def export_tries_jsonl(self, out: Path) -> int:
        """Every try, oldest first, one JSON object per line; written atomically."""
        from engine.safe_write import output_file

        count = 0
        with self._lock:
            rows = self._conn().execute(f"SELECT {_COLUMNS} FROM tries ORDER BY id")
            with output_file(Path(out)) as fh:
                for row in rows:
                    fh.write(json.dumps(_row_to_try(row).as_dict(), ensure_ascii=False) + "\n")
                    count += 1
        return count

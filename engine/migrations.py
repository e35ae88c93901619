"""The schema of the data home's SQLite database (`tunedeck.db`: tries, rated completions,
ratings, A/B pairs), as migrations. ``MIGRATIONS[i]`` upgrades a database from version ``i`` to
``i + 1`` (SQLite's ``PRAGMA user_version``). To change the schema, append a function; never edit
a released one. Imports nothing of tunedeck: every store builds on it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _v1_tries(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE tries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            model TEXT NOT NULL,
            template TEXT NOT NULL,
            template_text TEXT NOT NULL,
            strategy TEXT NOT NULL,   -- JSON
            params TEXT NOT NULL,     -- JSON
            inputs TEXT NOT NULL,     -- JSON
            prompt_text TEXT NOT NULL,
            output TEXT NOT NULL
        )""")


def _v2_adapter_metrics(db: sqlite3.Connection) -> None:
    # Tries made with a fine-tuned adapter, and timings/token counts kept with each try.
    db.execute("ALTER TABLE tries ADD COLUMN adapter TEXT")
    db.execute("ALTER TABLE tries ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}'")
    db.execute("CREATE INDEX tries_created ON tries(created_at)")


def _v3_ratings(db: sqlite3.Connection) -> None:
    # Rated completions, their ratings and A/B pairs (read by engine/ratings/).
    db.execute("""
        CREATE TABLE completions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            source TEXT NOT NULL,          -- try | sample | eval | ab | manual
            source_ref TEXT UNIQUE,        -- e.g. try:12, run:<id>:<step>:<i>; re-adding is a no-op
            prompt TEXT NOT NULL,          -- what a person reads as the prompt
            messages TEXT,                 -- JSON chat messages of the prompt; NULL: plain text
            prompt_text TEXT NOT NULL,     -- the exact text the model was given
            completion TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            adapter TEXT,
            run_id TEXT,
            template TEXT,
            strategy TEXT NOT NULL DEFAULT '{}',   -- JSON
            params TEXT NOT NULL DEFAULT '{}',     -- JSON
            extra TEXT NOT NULL DEFAULT '{}',      -- JSON: step, sample index, reference, ...
            try_id INTEGER REFERENCES tries(id)
        )""")
    db.execute("CREATE INDEX completions_source ON completions(source)")
    db.execute("""
        CREATE TABLE ratings (
            completion_id INTEGER PRIMARY KEY REFERENCES completions(id) ON DELETE CASCADE,
            thumbs INTEGER CHECK (thumbs IN (-1, 1)),
            stars INTEGER CHECK (stars BETWEEN 1 AND 5),
            ideal TEXT,
            comment TEXT,
            updated_at TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE pairs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            a_id INTEGER NOT NULL REFERENCES completions(id),
            b_id INTEGER NOT NULL REFERENCES completions(id),
            choice TEXT CHECK (choice IN ('a', 'b', 'tie')),
            comment TEXT,
            info TEXT NOT NULL DEFAULT '{}',  -- JSON: what differs between a and b
            updated_at TEXT
        )""")


Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = [_v1_tries, _v2_adapter_metrics, _v3_ratings]
SCHEMA_VERSION = len(MIGRATIONS)

"""The history store: tries, search, export, WAL, and migrations from older schemas."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from engine import paths
from engine.errors import TunedeckError
from engine.store import MIGRATIONS, SCHEMA_VERSION, HistoryStore, migrate


def add(store: HistoryStore, text: str = "What is 2+2?", output: str = "4", **over) -> int:
    fields = dict(model="smollm2-135m-instruct", adapter=None, template="instruction",
                  template_text="{{ prompt }}", strategy={"kind": "zero-shot", "k": 0},
                  params={"temperature": 0.0}, inputs={"prompt": text},
                  prompt_text=f"<|im_start|>user\n{text}", output=output,
                  metrics={"ttft_s": 0.1, "tokens_per_s": 50.0, "prompt_tokens": 9,
                           "completion_tokens": 2})
    fields.update(over)
    return store.add_try(**fields)


def test_created_on_first_use_in_wal_mode():
    store = HistoryStore()
    assert not paths.db_path().exists()  # constructing it writes nothing
    add(store)
    assert paths.db_path().is_file()
    assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(paths.db_path())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_add_get_list_search():
    with HistoryStore() as store:
        first = add(store, "capital of France?", "Paris", adapter="runs/abc/adapter")
        second = add(store, "2+2 100%", "4")
        t = store.get_try(first)
        assert (t.inputs, t.output, t.adapter) == ({"prompt": "capital of France?"}, "Paris",
                                                    "runs/abc/adapter")
        assert t.metrics["tokens_per_s"] == 50.0 and t.strategy["kind"] == "zero-shot"
        assert [x.id for x in store.list_tries()] == [second, first]  # newest first
        assert [x.id for x in store.list_tries(search="france")] == [first]
        assert [x.id for x in store.list_tries(search="abc/adapter")] == [first]
        assert [x.id for x in store.list_tries(search="100%")] == [second]  # % is literal
        assert [x.id for x in store.list_tries(search="0%")] == [second]
        assert [x.id for x in store.list_tries(limit=1, offset=1)] == [first]
        with pytest.raises(TunedeckError, match="No try with id 99"):
            store.get_try(99)


def test_tries_and_ratings_share_one_timestamp(monkeypatch):
    """Every table stores the same UTC, whole-second ISO timestamp, from one helper."""
    from datetime import datetime

    from engine import store as store_module
    from engine.ratings import store as ratings

    stamp = store_module.utc_now()
    assert datetime.fromisoformat(stamp).utcoffset().total_seconds() == 0
    assert len(stamp) == len("2026-01-02T03:04:05+00:00")
    assert ratings._now is store_module.utc_now
    monkeypatch.setattr(store_module, "utc_now", lambda: "2001-02-03T04:05:06+00:00")
    with HistoryStore() as store:
        assert store.get_try(add(store)).created_at == "2001-02-03T04:05:06+00:00"


def test_export_jsonl(tmp_path):
    with HistoryStore() as store:
        ids = [add(store, f"q{i}", f"a{i}") for i in range(3)]
        out = tmp_path / "out" / "tries.jsonl"
        assert store.export_tries_jsonl(out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ids
    assert rows[0]["inputs"] == {"prompt": "q0"} and rows[2]["output"] == "a2"
    assert set(rows[0]) >= {"model", "adapter", "template", "template_text", "strategy",
                            "params", "prompt_text", "metrics", "created_at"}


def test_concurrent_writers_from_threads():
    with HistoryStore() as store:
        threads = [threading.Thread(target=lambda: [add(store) for _ in range(10)])
                   for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(store.list_tries(limit=100)) == 40


def _version_1_database(path) -> None:
    """A database as the first schema wrote it: no adapter, no metrics."""
    db = sqlite3.connect(path)
    db.execute("""
        CREATE TABLE tries (
            id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, model TEXT NOT NULL,
            template TEXT NOT NULL, template_text TEXT NOT NULL, strategy TEXT NOT NULL,
            params TEXT NOT NULL, inputs TEXT NOT NULL, prompt_text TEXT NOT NULL,
            output TEXT NOT NULL)""")
    db.execute("INSERT INTO tries (created_at, model, template, template_text, strategy, "
               "params, inputs, prompt_text, output) VALUES ('2026-01-01T00:00:00+00:00', 'old',"
               " 'instruction', '{{ prompt }}', '{\"kind\": \"zero-shot\"}', '{}', "
               "'{\"prompt\": \"hello\"}', 'hello', 'hi there')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_migrates_an_older_schema_in_place(tmp_path):
    path = tmp_path / "old.db"
    _version_1_database(path)
    with HistoryStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 2
        old = store.list_tries()[0]
        assert (old.model, old.output, old.adapter, old.metrics) == ("old", "hi there", None, {})
        new = add(store, adapter="runs/x/adapter")
        assert store.get_try(new).adapter == "runs/x/adapter"
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(tries)")}
    assert {"adapter", "metrics"} <= columns


def test_migration_machinery_is_generic_and_atomic(tmp_path):
    db = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    assert migrate(db) == SCHEMA_VERSION

    def add_notes(conn):  # the shape of a later migration
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, try_id INTEGER, note TEXT)")

    def broken(conn):
        conn.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("simulated failure")

    with pytest.raises(sqlite3.OperationalError):
        migrate(db, [*MIGRATIONS, add_notes, broken])
    # the good step stays applied, the failed one left nothing behind
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "notes" in tables and "half_done" not in tables


def test_newer_database_is_refused_clearly(tmp_path):
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.commit()
    db.close()
    with pytest.raises(TunedeckError, match="newer than this tunedeck"):
        HistoryStore(path).list_tries()


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TunedeckError, match="junk.db"):
        HistoryStore(path).list_tries()


def test_concurrent_first_opens_migrate_once(tmp_path):
    path = tmp_path / "race.db"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_and_add() -> None:
        try:
            start.wait()
            with HistoryStore(path) as store:
                add(store)
        except BaseException as err:  # collected: a thread's failure must fail the test
            errors.append(err)

    threads = [threading.Thread(target=open_and_add) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with HistoryStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION and store.count_tries() == 4

"""Hostile input: conversations in the wrong order, identical preference pairs, lone surrogates,
deeply nested JSON, outputs that would overwrite something, killed writes, damaged or read-only
databases. Each gets a `tunedeck: …` message naming the file and the fix, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from engine.data import validate
from engine.errors import describe_failure
from engine.ratings import RatingStore
from engine.safe_write import TEMP_PREFIX, clean_stale


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def msgs(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


OK = msgs(("user", "hi"), ("assistant", "hello"))


def issue(report, code: str):
    found = [i for i in report.issues if i.code == code]
    assert found, [str(i) for i in report.issues]
    return found[0]


# --------------------------------------------------------------------------- messages rows


@pytest.mark.parametrize("row, code, field", [
    (msgs(("user", "hi"), ("bot", "hello")), "unknown_role", "messages[1]"),
    (msgs(("tool", "x"), ("user", "hi"), ("assistant", "a")), "unknown_role", "messages[0]"),
    (msgs(("assistant", "hello"), ("user", "hi"), ("assistant", "a")), "turn_order",
     "messages[0]"),
    (msgs(("user", "hi")), "turn_order", "messages[0]"),
    (msgs(("user", "hi"), ("assistant", "a"), ("user", "more?")), "turn_order", "messages[2]"),
    (msgs(("user", "hi"), ("user", "again"), ("assistant", "a")), "turn_order", "messages[1]"),
    (msgs(("system", "s"), ("user", "hi"), ("system", "s2"), ("assistant", "a")), "turn_order",
     "messages[2]"),
    (msgs(("system", "s"), ("assistant", "a")), "missing_field", "messages"),
    ({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "user",
                                                                    "content": "a"}]},
     "turn_order", "completion[0]"),
])
def test_messages_rows_need_known_roles_in_turn_order(tmp_path, row, code, field):
    first = OK if "messages" in row else {
        "prompt": [{"role": "user", "content": "q0"}],
        "completion": [{"role": "assistant", "content": "a0"}]}
    report = validate(write_jsonl(tmp_path / "d.jsonl", [first, row]))
    found = issue(report, code)
    assert (found.line, found.field, found.severity) == (2, field, "error")
    assert found.fix
    assert report.usable == 1


def test_good_conversations_pass(tmp_path):
    rows = [OK, msgs(("system", "Be brief."), ("user", "a"), ("assistant", "b"), ("user", "c"),
                     ("assistant", "d"))]
    report = validate(write_jsonl(tmp_path / "d.jsonl", rows))
    assert report.clean, [str(i) for i in report.issues]


def test_duplicates_look_at_the_whole_conversation(tmp_path):
    a = msgs(("user", "first question"), ("assistant", "x"), ("user", "and?"), ("assistant", "y"))
    b = msgs(("user", "another question"), ("assistant", "z"), ("user", "and?"),
             ("assistant", "y"))
    report = validate(write_jsonl(tmp_path / "d.jsonl", [a, b]))
    assert report.duplicates == 0 and report.clean  # same last turns, different conversations
    report = validate(write_jsonl(tmp_path / "e.jsonl", [a, b, a]))
    assert report.duplicates == 1
    assert issue(report, "duplicate").message == "exact duplicate of line 1"


def test_rows_differing_only_in_their_rationale_are_not_duplicates(tmp_path):
    rows = [{"prompt": "2+2?", "rationale": "two and two", "answer": "4"},
            {"prompt": "2+2?", "rationale": "count up twice", "answer": "4"}]
    report = validate(write_jsonl(tmp_path / "d.jsonl", rows))
    assert report.duplicates == 0


def test_preference_rows_with_the_same_answers_are_flagged(tmp_path):
    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"},
            {"prompt": "p", "chosen": "same", "rejected": " same "},
            {"prompt": [{"role": "user", "content": "p"}],
             "chosen": [{"role": "assistant", "content": "x"}],
             "rejected": [{"role": "assistant", "content": "x"}]}]
    report = validate(write_jsonl(tmp_path / "d.jsonl", rows))
    flagged = [(i.line, i.field) for i in report.issues if i.code == "same_answers"]
    assert flagged == [(2, "rejected"), (3, "rejected")]
    assert report.usable == 1


# --------------------------------------------------------------------------- strange text


def test_a_lone_surrogate_is_refused_at_check_with_line_and_field(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "ok", "completion": "fine"}\n'
                    '{"prompt": "bad \\ud800 here", "completion": "x"}\n'
                    '{"prompt": "pair \\ud83d\\ude00 is fine", "completion": "y"}\n',
                    encoding="utf-8")
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2 [prompt]: error:" in out and "lone surrogate" in out
    assert "2 of 3 rows usable" in out


def test_a_lone_surrogate_deep_in_a_json_array_names_its_field(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"messages": [{"role": "user", "content": "hi"}, '
                    '{"role": "assistant", "content": "a \\udc00"}]}\n]\n', encoding="utf-8")
    found = issue(validate(path), "lone_surrogate")
    assert (found.line, found.field) == (2, "messages[1].content")


def test_deeply_nested_json_is_an_error_on_its_line(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n'
                    + '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: error:" in out and "nested too deeply" in out
    array = tmp_path / "d.json"
    array.write_text("[\n" + "[" * 100_000 + "]" * 100_000 + "\n]", encoding="utf-8")
    found = issue(validate(array), "invalid_json")
    assert "nested too deeply" in found.message and found.line == 2


# --------------------------------------------------------------------------- writers


def rows_file(tmp_path: Path, n: int = 20) -> Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(n)])


def test_split_refuses_to_overwrite_without_force(tmp_path, capsys):
    src, out = rows_file(tmp_path), tmp_path / "out"
    assert main(["data", "split", str(src), "--out", str(out)]) == 0
    (out / "test.jsonl").write_text("mine\n")
    assert main(["data", "split", str(src), "--out", str(out), "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunedeck: ") and "already exists; pass --force" in err
    assert (out / "test.jsonl").read_text() == "mine\n"  # nothing was replaced
    assert main(["data", "split", str(src), "--out", str(out), "--force"]) == 0
    assert (out / "test.jsonl").read_text() != "mine\n"


def test_split_never_writes_onto_its_own_input(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    src = rows_file(folder)
    train = src.rename(folder / "train.jsonl")
    before = train.read_bytes()
    for extra in ([], ["--force"]):
        assert main(["data", "split", str(folder), "--out", str(folder), *extra]) == 1
        assert "is this command's input" in capsys.readouterr().err
    assert train.read_bytes() == before
    assert not (folder / "validation.jsonl").exists()


def test_split_into_an_unwritable_folder_says_so(tmp_path, capsys):
    assert main(["data", "split", str(rows_file(tmp_path)), "--out", "/sys/tunedeck-x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunedeck: /sys/tunedeck-x") and "write somewhere else" in err
    assert "Traceback" not in err


def test_split_cleans_the_temp_file_a_killed_write_left(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"{TEMP_PREFIX}999999999-train.jsonl"
    stale.write_text("half")
    assert main(["data", "split", str(rows_file(tmp_path)), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl",
                                                      "validation.jsonl"]


def test_a_killed_write_leaves_only_a_recognisable_temp_that_the_next_start_removes(tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    target = tmp_path / "out.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom engine.safe_write import output_file\n"
         f"with output_file(__import__('pathlib').Path({str(target)!r})) as fh:\n"
         "    fh.write('partial'); fh.flush(); print('writing', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
    left = list(tmp_path.iterdir())
    assert [p.name.startswith(TEMP_PREFIX) for p in left] == [True]
    assert not target.exists()
    assert clean_stale(tmp_path) == left and not list(tmp_path.iterdir())


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from engine.data import splits
    from engine.data.schema import Example

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(splits.json, "dumps", broken)
    with pytest.raises(ValueError):
        splits.write_jsonl([Example(prompt="p", completion="c")], tmp_path / "out" / "x.jsonl")
    assert not list((tmp_path / "out").iterdir())


@pytest.fixture
def rated_store(tunedeck_home):
    with RatingStore() as store:
        for i in range(3):
            cid = store.add_completion(source="manual", prompt=f"p{i}", completion=f"c{i}")
            store.rate(cid, stars=5)
        yield store


def test_ratings_export_into_a_folder_writes_a_file_there(rated_store, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["ratings", "export", "--format", "sft", str(folder)]) == 0
    written = folder / "ratings-sft.jsonl"
    assert len(written.read_text().splitlines()) == 3
    assert main(["ratings", "export", "--format", "sft", str(folder)]) == 1
    assert "ratings-sft.jsonl: already exists; pass --force" in capsys.readouterr().err
    assert main(["ratings", "export", "--format", "sft", str(folder), "--force"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["ratings-sft.jsonl"]


def test_ratings_export_never_replaces_the_database(rated_store, tunedeck_home, capsys):
    db = tunedeck_home / "tunedeck.db"
    assert main(["ratings", "export", "--format", "sft", str(db), "--force"]) == 1
    assert "is this command's input" in capsys.readouterr().err
    assert main(["ratings", "list"]) == 0  # the history is intact


# --------------------------------------------------------------------------- databases


def test_a_damaged_ratings_database_is_named_and_not_discarded(rated_store, tunedeck_home,
                                                              capsys):
    with RatingStore() as store:
        for i in range(300):
            store.add_completion(source="manual", prompt=f"prompt {i} " * 20, completion="c")
    db = tunedeck_home / "tunedeck.db"
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):  # every page after the first two
        data[offset:offset + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    assert main(["ratings", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tunedeck: {db}: the history database is damaged")
    assert ".recover" in err and "Move the file away" not in err and "Traceback" not in err


def test_a_read_only_history_still_lists_and_says_read_only_on_write(rated_store, monkeypatch,
                                                                    capsys):
    from engine import store as store_module

    real = sqlite3.connect

    def read_only_fs(target, *args, uri=False, **kwargs):
        # What a read-only folder does: the normal open fails, a read-only open works.
        if not uri:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(target, *args, uri=uri, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", read_only_fs)
    assert main(["ratings", "list"]) == 0
    assert "p1" in capsys.readouterr().out
    assert main(["ratings", "rate", "1", "--stars", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunedeck: ") and "read-only" in err and "Move" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_home(rated_store, tunedeck_home, capsys):
    rated_store.close()
    os.chmod(tunedeck_home, 0o555)
    try:
        assert main(["ratings", "list"]) == 0
        assert main(["ratings", "rate", "1", "--stars", "2"]) == 1
        assert "read-only" in capsys.readouterr().err
    finally:
        os.chmod(tunedeck_home, 0o755)


@pytest.mark.parametrize("err, words", [
    (PermissionError(13, "Permission denied", "/srv/home/tunedeck.db"),
     "/srv/home/tunedeck.db: permission denied (a read-only folder"),
    (OSError(30, "Read-only file system", "/mnt/ro/out.jsonl"),
     "/mnt/ro/out.jsonl: the file system is read-only"),
    (OSError(28, "No space left on device", "/x"), "/x: the disk is full"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (sqlite3.DatabaseError("database disk image is malformed"), "damaged"),
    (sqlite3.OperationalError("database is locked"), "another tunedeck is writing"),
])
def test_describe_failure_says_what_and_what_to_do(err, words):
    assert words in describe_failure(err)


def test_the_worker_error_path_uses_the_same_words():
    from tui.screens.base import describe_error

    err = OSError(30, "Read-only file system", "/mnt/ro/out.jsonl")
    assert describe_error(err) == describe_failure(err)


def test_split_keeps_conversations_labels_and_other_columns(tmp_path):
    convs = [dict(msgs(("system", "s"), ("user", f"q{i}"), ("assistant", f"a{i}"),
                       ("user", "more"), ("assistant", f"b{i}")), id=i) for i in range(10)]
    kto = [{"prompt": f"p{i}", "completion": f"c{i}", "label": i % 2 == 0} for i in range(10)]
    for name, rows in (("convs", convs), ("kto", kto)):
        src = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        out = tmp_path / f"{name}-out"
        assert main(["data", "split", str(src), "--out", str(out)]) == 0
        written = [json.loads(line) for part in ("train", "validation", "test")
                   for line in (out / f"{part}.jsonl").read_text().splitlines()]
        key = (lambda r: r["id"]) if name == "convs" else (lambda r: r["prompt"])
        assert sorted(written, key=key) == sorted(rows, key=key)

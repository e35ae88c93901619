"""Ratings: persistence, concurrent writers, crash safety, provenance, queue and exports."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import paths
from engine.errors import TunedeckError
from engine.ratings import RatingStore, build_export, chatml_messages
from engine.store import SCHEMA_VERSION, HistoryStore

ROOT = Path(__file__).resolve().parents[1]
CHAT = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n" \
       "<|im_start|>assistant\n"


def msgs(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]


def add(store: RatingStore, q: str, answer: str, source: str = "manual", chat: bool = True,
        **kw) -> int:
    return store.add_completion(source=source, prompt=q, completion=answer,
                                messages=msgs(q) if chat else None,
                                prompt_text=CHAT.format(q=q) if chat else f"Q: {q}\nA:", **kw)


def test_schema_is_one_migration_on_the_store(tmp_path):
    with HistoryStore(tmp_path / "h.db") as store:
        assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "h.db")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tries", "completions", "ratings", "pairs"} <= tables
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ratings_survive_reopening(tmp_path):
    db = tmp_path / "h.db"
    with RatingStore(db) as store:
        cid = add(store, "2+2?", "4", model="m1", adapter="runA", run_id="runA", template="t",
                  strategy={"kind": "few-shot", "k": 3}, params={"temperature": 0.7})
        store.rate(cid, stars=4)
        store.rate(cid, thumbs=1, comment="good")  # other fields keep their values
        store.rate(cid, ideal="4.")
    with RatingStore(db) as store:
        c = store.get_completion(cid)
    assert (c.rating.stars, c.rating.thumbs, c.rating.comment, c.rating.ideal) == \
        (4, 1, "good", "4.")
    assert (c.model, c.adapter, c.run_id, c.template) == ("m1", "runA", "runA", "t")
    assert c.strategy == {"kind": "few-shot", "k": 3} and c.params == {"temperature": 0.7}
    assert c.messages == msgs("2+2?")


def test_rate_checks_its_input(tmp_path):
    with RatingStore(tmp_path / "h.db") as store:
        cid = add(store, "q", "a")
        with pytest.raises(TunedeckError, match="stars"):
            store.rate(cid, stars=6)
        with pytest.raises(TunedeckError, match="thumbs"):
            store.rate(cid, thumbs=2)
        with pytest.raises(TunedeckError, match="No completion with id 99"):
            store.rate(99, stars=3)
        store.rate(cid, stars=3)
        store.rate(cid, stars=None)  # cleared again
        assert not store.get_completion(cid).rated


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from engine.ratings import RatingStore
    from engine.store import HistoryStore
    db, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store, tries = RatingStore(db), HistoryStore(db)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(n):
        cid = store.add_completion(source="manual", prompt=f"{tag} {i}", completion="x",
                                   source_ref=f"{tag}:{i}")
        store.rate(cid, stars=1 + i % 5)
        tries.add_try(model="m", adapter=None, template="t", template_text="", strategy={},
                      params={}, inputs={}, prompt_text=tag, output=str(i), metrics={})
""")


def test_two_processes_write_at_once(tmp_path):
    """The TUI and the CLI write the same database at the same time; nothing is lost."""
    db = tmp_path / "h.db"
    RatingStore(db).queue()  # create it
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), tag, "40"], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for tag in ("tui", "cli")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait(timeout=120) == 0
    with RatingStore(db) as store:
        items = store.completions()
        assert len(items) == 80 and all(c.rated for c in items)
        assert {c.prompt.split()[0] for c in items} == {"tui", "cli"}
    with HistoryStore(db) as tries:
        assert tries.count_tries() == 80


def test_a_crash_mid_write_keeps_what_was_committed(tmp_path):
    db = tmp_path / "h.db"
    script = textwrap.dedent("""
        import os, sys
        from engine.ratings import RatingStore
        store = RatingStore(sys.argv[1])
        for i in range(3):
            store.rate(store.add_completion(source="manual", prompt=f"p{i}", completion="c"),
                       thumbs=1)
        db = store._conn()
        db.execute("BEGIN")
        db.execute("UPDATE ratings SET thumbs = -1")
        db.execute("INSERT INTO completions (created_at, source, prompt, prompt_text, completion)"
                   " VALUES ('t', 'manual', 'lost', 'lost', 'lost')")
        os._exit(9)  # dies inside the transaction
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(db)], cwd=ROOT)
    assert proc.returncode == 9
    with RatingStore(db) as store:
        items = store.completions()
    assert [c.prompt for c in items] == ["p0", "p1", "p2"]
    assert all(c.rating.thumbs == 1 for c in items)


def test_a_playground_try_keeps_its_provenance_and_messages(tmp_path):
    db = tmp_path / "h.db"
    with HistoryStore(db) as store:
        tid = store.add_try(model="smollm2", adapter="run-7", template="sql",
                            template_text="...", strategy={"kind": "cot"},
                            params={"temperature": 0.2}, inputs={"prompt": "How many?"},
                            prompt_text=CHAT.format(q="How many?"), output="SELECT 1",
                            metrics={})
    with RatingStore(db) as ratings:
        cid = ratings.add_try(tid)
        assert ratings.add_try(tid) == cid  # re-adding is a no-op
        c = ratings.get_completion(cid)
    assert (c.source, c.try_id, c.model, c.adapter, c.template) == \
        ("try", tid, "smollm2", "run-7", "sql")
    assert c.strategy == {"kind": "cot"} and c.params == {"temperature": 0.2}
    assert c.messages == msgs("How many?") and c.prompt == "How many?"
    assert c.completion == "SELECT 1"


def test_chatml_parsing_refuses_what_it_does_not_understand():
    assert chatml_messages(CHAT.format(q="hi")) == msgs("hi")
    assert chatml_messages("Q: hi\nA:") is None
    assert chatml_messages("junk" + CHAT.format(q="hi")) is None


def test_training_samples_from_a_run(tmp_path):
    from engine.training.rundir import RunDir

    run = RunDir(paths.ensure_dir(paths.runs_dir()) / "20261129-000000-x-abcd")
    run.path.mkdir()
    run.write_status("done", model="smollm2-135m-instruct", method="qlora")
    for step in (10, 20):
        for i in range(2):
            run.append_event("sample", step=step, prompt=f"q{i}", reference=f"r{i}",
                             completion=f"c{step}-{i}")
    with RatingStore() as store:
        ids = store.import_run_samples(run.id)
        assert store.import_run_samples(run.id) == ids
        c = store.get_completion(ids[3])
    assert len(ids) == 4
    assert (c.source, c.run_id, c.completion, c.source_ref) == \
        ("sample", run.id, "c20-1", f"run:{run.id}:20:1")
    assert c.extra == {"step": 20, "sample": 1, "reference": "r1"}
    assert c.model == "smollm2-135m-instruct"


def test_a_completion_is_found_by_its_source_through_the_index(tmp_path):
    with RatingStore(tmp_path / "h.db") as store:
        ids = [add(store, f"q{i}", f"a{i}", source="sample", source_ref=f"run:r:{i}:0")
               for i in range(3)]
        store.rate(ids[1], stars=3)
        seen: list[str] = []
        store._conn().set_trace_callback(seen.append)
        found = store.completion_by_source("run:r:1:0")
        assert store.completion_by_source("run:r:9:0") is None
        store._conn().set_trace_callback(None)
        assert (found.id, found.completion, found.rating.stars) == (ids[1], "a1", 3)
        # One row read through source_ref's unique index, not a scan of every completion.
        plans = [" ".join(row[3] for row in store._conn().execute(f"EXPLAIN QUERY PLAN {sql}"))
                 for sql in seen]
        assert plans and all("USING INDEX sqlite_autoindex_completions" in p for p in plans)
        assert not any("SCAN" in p for p in plans)


def test_get_pair_reads_one_pair(tmp_path, monkeypatch):
    with RatingStore(tmp_path / "h.db") as store:
        made = []
        for q in ("x", "y", "z"):
            a, b = add(store, q, "A", source="ab"), add(store, q, "B", source="ab")
            made.append(store.add_pair(a, b, info={"q": q}))
        store.choose(made[1], "b", comment="shorter")
        expected = {p.id: p for p in store.pairs()}[made[1]]

        def everything(*args, **kwargs):
            raise AssertionError("get_pair read every pair or completion")

        monkeypatch.setattr(store, "pairs", everything)
        monkeypatch.setattr(store, "completions", everything)
        assert store.get_pair(made[1]) == expected
        assert store.get_pair(made[1]).info == {"q": "y"}
        with pytest.raises(TunedeckError, match="No A/B pair with id 99"):
            store.get_pair(99)


def test_queue_filters_and_progress(tmp_path):
    with RatingStore(tmp_path / "h.db") as store:
        ids = [add(store, f"q{i}", "a", source="try" if i < 3 else "eval") for i in range(5)]
        a, b = add(store, "q", "A", source="ab"), add(store, "q", "B", source="ab")
        pair = store.add_pair(a, b, info={"differs": "temperature"})
        store.rate(ids[0], stars=5)
        store.choose(pair, "tie")
        assert store.progress() == (2, 6)  # pair members count once, as their pair
        assert store.progress("try") == (1, 3)
        assert [i.id for i in store.queue("try", unrated_only=True)] == ids[1:3]
        assert [i.kind for i in store.queue("ab")] == ["pair"]
        assert store.sources() == ["try", "eval", "ab"]
        with pytest.raises(TunedeckError, match="a, b or tie"):
            store.choose(pair, "c")


# --------------------------------------------------------------------------- exports


@pytest.fixture
def rated(tmp_path) -> RatingStore:
    store = RatingStore(tmp_path / "h.db")
    good = add(store, "capital of France?", "Paris.")
    bad = add(store, "capital of France?", "Lyon.")
    meh = add(store, "capital of France?", "It is a city.")
    fixed = add(store, "2+2?", "5")
    unrated = add(store, "3+3?", "6")
    down = add(store, "4+4?", "9")
    store.rate(good, stars=5)
    store.rate(bad, stars=1)
    store.rate(meh, stars=3)
    store.rate(fixed, thumbs=-1, ideal="4")
    store.rate(down, thumbs=-1)
    a, b = add(store, "Say hi", "Hello!", source="ab"), add(store, "Say hi", "hi", source="ab")
    store.choose(store.add_pair(a, b), "a")
    c, d = add(store, "Say bye", "Bye", source="ab"), add(store, "Say bye", "bye", source="ab")
    store.choose(store.add_pair(c, d), "tie")
    store.ids = dict(good=good, bad=bad, meh=meh, fixed=fixed, unrated=unrated, down=down)
    yield store
    store.close()


def user_of(row) -> str:
    return row["prompt"][-1]["content"]


def test_sft_export_takes_accepted_and_corrected(rated, tmp_path):
    report = rated.export("sft", tmp_path / "sft.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert report.rows == len(rows) == 2 and report.conversational
    assert {(user_of(r), r["completion"][0]["content"]) for r in rows} == \
        {("capital of France?", "Paris."), ("2+2?", "4")}
    assert rows[0]["prompt"] == msgs("capital of France?")
    assert rows[0]["completion"] == [{"role": "assistant", "content": "Paris."}]
    assert report.counts == {"accepted completions": 1, "corrected completions": 1}
    assert report.left_out == {"not accepted: 1 stars (below 4)": 1,
                               "not accepted: 3 stars (below 4)": 1,
                               "not accepted: not rated": 1, "not accepted: thumbs down": 1}
    assert "left out: 4" in report.text()


def test_dpo_export_from_choices_star_differences_and_corrections(rated):
    rows, report = build_export("dpo", rated.completions(), rated.pairs())
    triples = {(user_of(r), r["chosen"][0]["content"], r["rejected"][0]["content"])
               for r in rows}
    assert triples == {
        ("Say hi", "Hello!", "hi"),
        ("capital of France?", "Paris.", "Lyon."),
        ("capital of France?", "Paris.", "It is a city."),
        ("capital of France?", "It is a city.", "Lyon."),
        ("2+2?", "4", "5"),
    }
    assert set(rows[0]) == {"prompt", "chosen", "rejected"}
    assert report.counts == {"A/B choices": 1, "star differences": 3, "corrections": 1}
    assert report.left_out == {"A/B tie": 1, "not rated": 1,
                               "thumbs down with no pair or correction to compare": 1}


def test_kto_export_labels_thumbs_and_star_thresholds(rated):
    rows, report = build_export("kto", rated.completions(), rated.pairs())
    labelled = {(user_of(r), r["completion"][0]["content"], r["label"]) for r in rows}
    assert labelled == {
        ("capital of France?", "Paris.", True), ("capital of France?", "Lyon.", False),
        ("2+2?", "4", True), ("2+2?", "5", False), ("4+4?", "9", False),
    }
    assert all(set(r) == {"prompt", "completion", "label"} for r in rows)
    assert report.left_out == {"neutral: 3 stars (between 2 and 4)": 1, "not rated": 1}


def test_plain_text_sources_export_plain_text(tmp_path):
    with RatingStore(tmp_path / "h.db") as store:
        store.rate(add(store, "q1", "yes", chat=False), thumbs=1)
        store.rate(add(store, "q2", "no", chat=False), thumbs=-1)
        chat = add(store, "q3", "maybe")
        store.rate(chat, thumbs=1)
        rows, report = build_export("kto", store.completions(), store.pairs())
        assert not report.conversational
        # A chat completion joins a plain-text export through the exact text the model saw.
        assert rows == [{"prompt": "Q: q1\nA:", "completion": "yes", "label": True},
                        {"prompt": "Q: q2\nA:", "completion": "no", "label": False},
                        {"prompt": CHAT.format(q="q3"), "completion": "maybe", "label": True}]
        rows, report = build_export("kto", store.completions(), store.pairs(), style="chat")
        assert len(rows) == 1 and report.left_out == {
            "no chat messages (plain-text prompt in a conversational export)": 2}
        with pytest.raises(TunedeckError, match="--format 'ppo'"):
            build_export("ppo", [], [])


def test_cli_export_and_list(rated, tmp_path, capsys, monkeypatch):
    from cli.main import main

    monkeypatch.setattr(paths, "db_path", lambda: rated.path)
    out = tmp_path / "dpo.jsonl"
    assert main(["ratings", "export", "--format", "dpo", str(out)]) == 0
    text = capsys.readouterr().out
    assert "DPO: 5 rows (conversational)" in text and "1 × A/B tie" in text
    assert len(out.read_text().splitlines()) == 5
    assert main(["ratings", "rate", str(rated.ids["unrated"]), "--stars", "4"]) == 0
    assert rated.get_completion(rated.ids["unrated"]).rating.stars == 4
    assert main(["ratings", "list", "--unrated"]) == 0
    listing = capsys.readouterr().out
    assert "Ratings: 8 / 8 rated" in listing and "Paris" not in listing
    assert main(["ratings", "rate", "999", "--up"]) == 1
    assert "No completion with id 999" in capsys.readouterr().err

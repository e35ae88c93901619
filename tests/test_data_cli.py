"""`tunedeck data check|stats|split` end to end through the real argument parser."""

from __future__ import annotations

import json
from pathlib import Path

from cli.main import main
from engine.data import load_examples, sample_path

BAD = Path(__file__).parent / "fixtures" / "data" / "bad"
GOOD = Path(__file__).parent / "fixtures" / "data" / "good"


def test_check_clean_file_exits_0(capsys):
    assert main(["data", "check", str(sample_path("sentiment", "test")), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "54 of 54 rows usable" in out


def test_check_lists_each_problem_and_exits_1(capsys):
    assert main(["data", "check", str(BAD / "completion_number.jsonl")]) == 1
    out = capsys.readouterr().out
    assert f"{BAD / 'completion_number.jsonl'}:3 [completion]: error:" in out
    assert "2 of 3 rows usable" in out and "1 wrong type" in out


def test_strict_fails_on_warnings_only(capsys):
    path = str(BAD / "duplicates.jsonl")
    assert main(["data", "check", path]) == 0
    assert main(["data", "check", path, "--strict"]) == 1
    assert "exact duplicate of line 1" in capsys.readouterr().out


def test_check_with_mapping(capsys):
    path = str(GOOD / "mapped.jsonl")
    assert main(["data", "check", path]) == 1
    assert main(["data", "check", path, "--map", "question=prompt,answer=completion"]) == 0
    assert "1 of 1 rows usable" in capsys.readouterr().out


def test_bad_map_is_one_line_not_a_traceback(capsys):
    assert main(["data", "check", str(GOOD / "seed.jsonl"), "--map", "oops"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunedeck: --map") and "Traceback" not in err


def test_many_problems_are_counted_not_flooded(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n" * 50, encoding="utf-8")
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.count("invalid JSON") == 10 and "40 more 'invalid json' problems" in out
    assert main(["data", "check", str(path), "--all"]) == 1
    assert capsys.readouterr().out.count("invalid JSON") == 50


def test_check_max_len_and_stats(default_model_dir, capsys):
    model = str(default_model_dir)
    path = str(sample_path("arithmetic", "test"))
    assert main(["data", "check", path, "--model", model, "--max-len", "4096"]) == 0
    assert main(["data", "check", path, "--model", model, "--max-len", "30"]) == 1
    out = capsys.readouterr().out
    assert f"{path}:1 [completion]: error: prompt + completion is" in out
    assert main(["data", "stats", str(sample_path("sentiment", "test")), "--model", model]) == 0
    out = capsys.readouterr().out
    for word in ("median", "p95", "positive", "negative", "neutral", "total tokens per row"):
        assert word in out


def test_split_writes_seeded_files_without_leakage(tmp_path, capsys):
    src = sample_path("sentiment", "train")
    assert main(["data", "split", str(src), "--out", str(tmp_path), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "leakage across splits: 0" in out
    counts = {s: len(load_examples(tmp_path / f"{s}.jsonl")) for s in ("train", "validation",
                                                                          "test")}
    assert sum(counts.values()) == len(load_examples(src))
    row = json.loads((tmp_path / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"instruction", "prompt", "completion"}

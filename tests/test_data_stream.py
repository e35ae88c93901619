"""Streaming validation: memory stays bounded however large the file or its problems."""

from __future__ import annotations

import json
import tracemalloc

from engine.data import validate
from engine.data.validate import ISSUES_KEPT_PER_CODE


def _write(path, n, bad_every=0):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            if bad_every and i % bad_every == 0:
                fh.write('{"prompt": "broken\n')
            else:
                fh.write(json.dumps({"instruction": "Answer briefly.", "prompt": f"question {i}",
                                     "completion": f"answer number {i}"}) + "\n")
    return path


def test_memory_is_a_small_fraction_of_the_file(tmp_path):
    path = _write(tmp_path / "big.jsonl", 40_000)
    size = path.stat().st_size
    validate(_write(tmp_path / "warm.jsonl", 10))  # imports (numpy, json) are not the scan's
    tracemalloc.start()
    try:
        report = validate(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.rows, report.usable, report.issues) == (40_000, 40_000, [])
    # Holding the rows would take several times the file size; the scan keeps 16 bytes a row
    # (duplicate detection) plus the sort's temporaries at the end.
    assert peak < size / 2, (peak, size)


def test_issue_list_is_capped_but_counts_are_exact(tmp_path):
    path = _write(tmp_path / "bad.jsonl", 6_000, bad_every=2)
    report = validate(path)
    assert report.counts["invalid_json"] == 3_000
    kept = [i for i in report.issues if i.code == "invalid_json"]
    assert len(kept) == ISSUES_KEPT_PER_CODE and report.truncated
    assert kept[0].line == 1 and kept[-1].line == 2 * ISSUES_KEPT_PER_CODE - 1
    assert (report.usable, report.rows) == (3_000, 6_000)
    assert report.unusable_by_reason["invalid_json"] == 3_000


def test_progress_and_keep(tmp_path):
    path = _write(tmp_path / "p.jsonl", 5_000)
    seen = []
    report = validate(path, keep=10, progress=seen.append)
    assert len(report.examples) == 10 and report.examples[0].prompt == "question 0"
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 3

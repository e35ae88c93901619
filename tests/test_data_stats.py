"""Stats with the model's tokenizer, the token-length check, and splits with leakage."""

from __future__ import annotations

import json

import pytest

from engine.data import (
    Example,
    compute_stats,
    histogram,
    label_distribution,
    leakage,
    load_examples,
    sample_path,
    split_examples,
    validate,
)


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from engine.models import load_tokenizer

    return load_tokenizer(str(default_model_dir))


def test_stats_on_sentiment(tokenizer):
    rows = load_examples(sample_path("sentiment", "validation"))
    stats = compute_stats(rows, tokenizer)
    assert stats.rows == len(rows)
    assert stats.completion_tokens.min >= 1 and stats.completion_tokens.max <= 3
    def count(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    assert stats.lengths[0] == count(rows[0].user_text()) + count(rows[0].completion) + \
        stats.template_overhead
    assert stats.template_overhead > 0  # the chat template's role markers
    s = stats.prompt_tokens
    assert s.min <= s.median <= s.p95 <= s.max
    assert sum(c for _, _, c in stats.histogram) == len(rows)
    assert set(stats.labels) == {"positive", "negative", "neutral"}
    assert sum(stats.labels.values()) == len(rows)


def test_no_labels_for_free_text(tokenizer):
    rows = load_examples(sample_path("arithmetic", "validation"))
    assert compute_stats(rows, tokenizer).labels == {}


def test_histogram_bins():
    assert histogram([1, 2, 3, 10], bins=3) == [(1, 4, 3), (5, 8, 0), (9, 12, 1)]
    assert histogram([]) == []


def test_label_distribution_for_kto():
    rows = [Example("p", "c", label=True), Example("p", "d", label=False),
            Example("p", "e", label=True)]
    assert label_distribution(rows) == {"desirable": 2, "undesirable": 1}


def test_too_long_rows_reported_with_how_much(tokenizer, tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text('{"prompt": "hi", "completion": "short"}\n'
                    '{"prompt": "hi", "completion": "' + "word " * 80 + '"}\n', encoding="utf-8")
    report = validate(path, tokenizer=tokenizer, max_len=64)
    [issue] = report.issues
    assert (issue.code, issue.line, issue.field, issue.severity) == (
        "too_long", 2, "completion", "error")
    assert "over max_len 64" in issue.message and (report.usable, report.rows) == (1, 2)
    truncated = validate(path, tokenizer=tokenizer, max_len=64, overlong="truncate")
    assert [(i.code, i.severity) for i in truncated.issues] == [("truncated", "warning")]
    assert truncated.usable == 2 and truncated.ok
    skipped = validate(path, tokenizer=tokenizer, max_len=64, overlong="skip")
    assert [(i.code, i.line) for i in skipped.issues] == [("skipped_too_long", 2)]
    assert skipped.usable == 1 and skipped.ok and not skipped.clean


def _rows(n):
    return [Example(prompt=f"q{i}", completion=f"a{i}", line=i + 1) for i in range(n)]


def test_split_is_seeded_and_complete():
    rows = _rows(100)
    a = split_examples(rows, seed=3)
    b = split_examples(rows, seed=3)
    c = split_examples(rows, seed=4)
    assert {k: [r.line for r in v] for k, v in a.items()} == \
        {k: [r.line for r in v] for k, v in b.items()}
    assert [r.line for r in a["train"]] != [r.line for r in c["train"]]
    assert [len(v) for v in a.values()] == [80, 10, 10]
    assert sorted(r.line for v in a.values() for r in v) == list(range(1, 101))


def test_duplicates_stay_in_one_split_and_leakage_is_reported():
    rows = _rows(50) + [Example(prompt="q7", completion="a7", line=99)]
    parts = split_examples(rows, seed=0)
    assert leakage(parts) == []
    leaky = {"train": [rows[7]], "test": [rows[-1]]}
    [leak] = leakage(leaky)
    assert (leak.split, leak.line, leak.other_split, leak.other_line) == ("test", 99, "train", 8)
    assert "exact duplicate" in str(leak)


class _WordTokenizer:
    """One token per word: enough to count lengths without loading a model."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        def ids(t):
            return [0] * len(t.split()) + ([1] if add_special_tokens else [])

        return {"input_ids": ids(text) if isinstance(text, str) else [ids(t) for t in text]}


def _with_duplicates(tmp_path):
    path = tmp_path / "dups.jsonl"
    lines = [json.dumps({"prompt": f"q{i % 4}", "completion": "a"}) for i in range(10)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_stats_take_the_duplicate_count_from_the_report(tmp_path, monkeypatch):
    report = validate(_with_duplicates(tmp_path), keep=10**9)
    assert (report.duplicates, report.scanned) == (6, 10)
    counted = compute_stats(report.examples, _WordTokenizer()).duplicates
    assert counted == 6

    def no_second_pass(self):
        raise AssertionError("duplicates were counted again")

    monkeypatch.setattr(Example, "key", no_second_pass)
    assert compute_stats(report.examples, _WordTokenizer(), report=report).duplicates == 6


def test_stats_count_duplicates_of_a_partial_report_themselves(tmp_path):
    # The report's count is for the whole file; these 5 rows hold only 1 duplicate.
    report = validate(_with_duplicates(tmp_path), keep=5)
    stats = compute_stats(report.examples, _WordTokenizer(), report=report)
    assert (stats.rows, stats.duplicates, report.duplicates) == (5, 1, 6)

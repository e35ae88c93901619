"""The validation report: every malformed fixture is reported at its exact line and field."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from engine.data import detect_schema, load_examples, validate
from engine.errors import TunedeckError

BAD = Path(__file__).parent / "fixtures" / "data" / "bad"

# file → (code, line, field, severity, usable rows, rows)
EXPECTED = {
    "invalid_json.jsonl": ("invalid_json", 3, None, "error", 3, 4),
    "trailing_comma.jsonl": ("invalid_json", 2, None, "error", 2, 3),
    "not_object_list.jsonl": ("not_object", 2, None, "error", 2, 3),
    "not_object_string.jsonl": ("not_object", 4, None, "error", 3, 4),
    "missing_completion.jsonl": ("missing_field", 2, "completion", "error", 2, 3),
    "missing_prompt.jsonl": ("missing_field", 3, "prompt", "error", 2, 3),
    "empty_completion.jsonl": ("empty_field", 2, "completion", "error", 2, 3),
    "blank_prompt.jsonl": ("empty_field", 1, "prompt", "error", 1, 2),
    "completion_object.jsonl": ("wrong_type", 2, "completion", "error", 1, 2),
    "completion_number.jsonl": ("wrong_type", 3, "completion", "error", 2, 3),
    "prompt_null.jsonl": ("wrong_type", 2, "prompt", "error", 1, 2),
    "instruction_list.jsonl": ("wrong_type", 1, "instruction", "error", 1, 2),
    "not_utf8.jsonl": ("not_utf8", 2, None, "error", 2, 3),
    "bom.jsonl": ("bom", 1, None, "warning", 2, 2),
    "blank_lines.jsonl": ("blank_line", 3, None, "warning", 3, 3),
    "duplicates.jsonl": ("duplicate", 4, None, "warning", 4, 4),
    "mixed_schema.jsonl": ("mixed_schema", 3, "chosen", "error", 3, 4),
    "empty.jsonl": ("empty_file", 0, None, "error", 0, 0),
    "long_line.jsonl": ("long_line", 2, None, "error", 2, 3),
    "messages_not_list.jsonl": ("wrong_type", 2, "messages", "error", 1, 2),
    "messages_bad_item.jsonl": ("wrong_type", 3, "messages[0]", "error", 2, 3),
    "messages_no_user.jsonl": ("missing_field", 2, "messages", "error", 1, 2),
    "preference_missing_rejected.jsonl": ("missing_field", 2, "rejected", "error", 1, 2),
    "preference_empty_chosen.jsonl": ("empty_field", 3, "chosen", "error", 2, 3),
    "kto_label_string.jsonl": ("wrong_type", 2, "label", "error", 1, 2),
    "alpaca_output_list.jsonl": ("wrong_type", 2, "output", "error", 1, 2),
    "text_empty.jsonl": ("empty_field", 2, "text", "error", 1, 2),
    "unknown_columns.jsonl": ("unknown_schema", 1, None, "error", 0, 1),
    "array_not_object.json": ("not_object", 5, None, "error", 2, 3),
    "array_invalid.json": ("invalid_json", 3, None, "error", 1, 2),
    "csv_empty_cell.csv": ("empty_field", 2, "completion", "error", 2, 3),
    "csv_not_utf8.csv": ("not_utf8", 3, "prompt", "error", 2, 3),
    "csv_extra_cells.csv": ("bad_csv_row", 2, None, "error", 1, 2),
    "csv_kto_label.csv": ("wrong_type", 2, "label", "error", 1, 2),
}


def test_every_fixture_is_listed():
    on_disk = {p.name for p in BAD.iterdir()}
    assert set(EXPECTED) <= on_disk
    assert len(EXPECTED) >= 25


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_reported_at_line_and_field(name):
    code, line, field, severity, usable, rows = EXPECTED[name]
    report = validate(BAD / name, max_line_bytes=200)
    found = [(i.code, i.line, i.field, i.severity) for i in report.issues]
    assert (code, line, field, severity) in found, found
    # Nothing else is wrong with the file, and nothing is silently dropped.
    assert len(found) == 1, found
    assert (report.usable, report.rows) == (usable, rows)
    assert report.rows - report.usable == sum(report.unusable_by_reason.values())
    issue = report.issues[0]
    assert issue.message and issue.fix
    unit = "line" if name.endswith((".jsonl", ".json")) else "row"
    assert issue.unit == unit
    assert str(issue).startswith(f"{BAD / name}:{line}" if unit == "line" and line
                                 else str(BAD / name))


def test_only_blank_lines_is_an_empty_file():
    report = validate(BAD / "only_blank.jsonl")
    assert [(i.code, i.line) for i in report.issues] == [
        ("empty_file", 0), ("blank_line", 1), ("blank_line", 2)]
    assert not report.ok and report.rows == 0


def test_summary_counts_why_rows_are_unusable(tmp_path):
    path = tmp_path / "mix.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{oops\n{"prompt": "c"}\n[]\n'
                    '{"prompt": "d", "completion": 3}\n', encoding="utf-8")
    report = validate(path)
    assert (report.usable, report.rows) == (1, 5)
    assert report.unusable_by_reason == {"invalid_json": 1, "missing_field": 1, "not_object": 1,
                                         "wrong_type": 1}
    summary = report.summary()
    assert "1 of 5 rows usable" in summary and "4 not usable" in summary
    assert not report.ok and not report.clean


def test_warnings_keep_rows_usable_but_not_clean():
    report = validate(BAD / "duplicates.jsonl")
    assert report.ok and not report.clean
    assert report.duplicates == 1
    assert "exact duplicate of line 1" in report.issues[0].message


def test_load_examples_refuses_damaged_file_naming_line_and_field():
    with pytest.raises(TunedeckError) as err:
        load_examples(BAD / "completion_number.jsonl")
    text = str(err.value)
    assert f"{BAD / 'completion_number.jsonl'}:3 [completion]" in text
    assert "tunedeck data check" in text


def test_load_examples_skip_invalid_is_an_explicit_choice():
    rows = load_examples(BAD / "completion_number.jsonl", skip_invalid=True)
    assert [r.line for r in rows] == [1, 2]


def test_load_examples_nothing_usable_raises():
    with pytest.raises(TunedeckError, match="no usable rows"):
        load_examples(BAD / "unknown_columns.jsonl", skip_invalid=True)
    with pytest.raises(TunedeckError, match="no rows"):
        load_examples(BAD / "empty.jsonl", skip_invalid=True)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TunedeckError, match="no such file"):
        validate(tmp_path / "nope.jsonl")


BOM_MESSAGE = "file starts with a UTF-8 byte-order mark (BOM)"
BOM_FIX = "save the file as UTF-8 without BOM (it was skipped)"


@pytest.mark.parametrize("name, body", [
    ("bom.jsonl", b'{"prompt": "q", "completion": "a"}\n'),
    ("bom.json", b'[{"prompt": "q", "completion": "a"}]'),
    ("bom.csv", b"prompt,completion\nq,a\n"),
    ("bom.tsv", b"prompt\tcompletion\nq\ta\n"),
])
def test_bom_is_the_same_warning_in_every_format(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body)
    report = validate(path, keep=1)
    [issue] = report.issues
    assert (issue.code, issue.line, issue.field, issue.severity) == ("bom", 1, None, "warning")
    assert (issue.message, issue.fix) == (BOM_MESSAGE, BOM_FIX)
    # The BOM is skipped, not glued to the first column or value.
    assert [(e.prompt, e.completion) for e in report.examples] == [("q", "a")]
    assert (report.usable, report.rows) == (1, 1)


def _count_detections(monkeypatch):
    # `engine.data.validate` the attribute is the function; the module is what scans.
    scan_module = importlib.import_module("engine.data.validate")
    calls = []

    def counting(columns, row=None):
        calls.append(row)
        return detect_schema(columns, row)

    monkeypatch.setattr(scan_module, "detect_schema", counting)
    return calls


def test_schema_is_detected_once_per_row(tmp_path, monkeypatch):
    # Past the 200-row vote window, with a row of another layout and a row of none inside it.
    path = tmp_path / "many.jsonl"
    rows = [{"prompt": f"q{i}", "completion": "a"} for i in range(300)]
    rows[5] = {"prompt": "q", "chosen": "c", "rejected": "r"}
    rows[9] = {"question": "q"}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n", encoding="utf-8")
    calls = _count_detections(monkeypatch)
    report = validate(path)
    assert len(calls) == 300  # the broken line has no row to look at
    assert report.schema == "prompt_completion" and report.usable == 298
    assert [(i.code, i.line) for i in report.issues] == [
        ("mixed_schema", 6), ("missing_field", 10), ("missing_field", 10), ("invalid_json", 301)]


def test_unknown_layout_message_comes_from_the_one_detection(monkeypatch):
    calls = _count_detections(monkeypatch)
    report = validate(BAD / "unknown_columns.jsonl")
    assert len(calls) == 1
    [issue] = report.issues
    assert issue.message == "columns (question, reply) match no known layout"
    assert issue.fix == ("expected prompt/completion (+instruction), messages, text, "
                         "instruction/input/output, prompt/chosen/rejected or "
                         "prompt/completion/label — or map yours with --map theirs=prompt,…")

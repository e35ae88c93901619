"""Loading: every layout and file format normalizes into `Example`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data import (
    SCHEMAS,
    Example,
    detect_schema,
    load_examples,
    parse_mapping,
    validate,
)
from engine.errors import TunedeckError

GOOD = Path(__file__).parent / "fixtures" / "data" / "good"


@pytest.mark.parametrize("columns, schema", [
    (["instruction", "prompt", "completion"], "seed"),
    (["prompt", "completion"], "prompt_completion"),
    (["messages"], "messages"),
    (["text"], "text"),
    (["instruction", "input", "output"], "alpaca"),
    (["instruction", "output", "system"], "alpaca"),
    (["prompt", "chosen", "rejected"], "preference"),
    (["prompt", "completion", "label"], "unpaired_preference"),
    (["instruction", "prompt", "rationale", "answer"], "seed"),
])
def test_detect_schema(columns, schema):
    assert detect_schema(columns) == schema
    assert schema in SCHEMAS


def test_detect_conversational_needs_the_values():
    row = {"prompt": [{"role": "user", "content": "x"}], "completion": []}
    assert detect_schema(row.keys(), row) == "conversational"
    with pytest.raises(ValueError, match="--map"):
        detect_schema(["question", "reply"])


def test_seed():
    rows = load_examples(GOOD / "seed.jsonl")
    assert rows[1] == Example(prompt="dog", completion="chien", instruction="Translate to French.",
                              line=2)
    assert rows[1].user_text() == "Translate to French.\n\ndog"


def test_conversational_prompt_completion():
    [ex] = load_examples(GOOD / "conversational.jsonl")
    assert (ex.prompt, ex.completion, ex.system) == ("Capital of France?", "Paris.", "Be brief.")
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant"]


def test_messages():
    [ex] = load_examples(GOOD / "messages.jsonl")
    assert (ex.prompt, ex.completion, ex.system) == ("2+2?", "4", "Be brief.")
    assert len(ex.messages) == 3


def test_text():
    [ex] = load_examples(GOOD / "text.jsonl")
    assert (ex.prompt, ex.completion) == ("", "Once upon a time.")


def test_alpaca():
    [ex] = load_examples(GOOD / "alpaca.jsonl")
    assert (ex.instruction, ex.prompt, ex.completion, ex.system) == (
        "Add the numbers.", "2 and 3", "5", "You are a calculator.")


def test_preference():
    [ex] = load_examples(GOOD / "preference.jsonl")
    assert (ex.prompt, ex.chosen, ex.rejected, ex.completion) == ("Say hi", "Hi!", "Go away.", "")
    assert ex.target() == "Hi!"


def test_unpaired_preference():
    rows = load_examples(GOOD / "unpaired_preference.jsonl")
    assert [(r.completion, r.label) for r in rows] == [("Hi!", True), ("No.", False)]


def test_chain_of_thought_completion_is_built_from_rationale_and_answer():
    [ex] = load_examples(GOOD / "cot.jsonl")
    assert ex.completion == "1 plus 1 is 2.\nAnswer: 2"
    assert (ex.rationale, ex.answer) == ("1 plus 1 is 2.", "2")


def test_column_mapping_and_extra_columns():
    mapping = parse_mapping("question=prompt, answer=completion")
    assert mapping == {"question": "prompt", "answer": "completion"}
    [ex] = load_examples(GOOD / "mapped.jsonl", mapping=mapping)
    assert (ex.prompt, ex.completion, ex.extra) == ("What is 2+2?", "4", {"source": "quiz"})
    assert validate(GOOD / "mapped.jsonl").schema is None  # unmapped: no layout


@pytest.mark.parametrize("text", ["question", "question=", "question=nonsense"])
def test_bad_mapping_is_a_clear_error(text):
    with pytest.raises(TunedeckError, match="--map"):
        parse_mapping(text)


def test_json_array_and_csv():
    rows = load_examples(GOOD / "array.json")
    assert [(r.prompt, r.line) for r in rows] == [("q1", 2), ("q2", 3)]
    rows = load_examples(GOOD / "table.csv")
    assert [(r.prompt, r.completion, r.line) for r in rows] == [
        ("q1", "a1", 1), ("q2, with a comma", "a2", 2)]


def test_limit():
    assert len(load_examples(GOOD / "seed.jsonl", limit=1)) == 1


def test_dataset_folder_and_split(tmp_path):
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.jsonl").write_text(
            json.dumps({"prompt": split, "completion": "x"}) + "\n", encoding="utf-8")
    assert load_examples(tmp_path)[0].prompt == "train"
    assert load_examples(tmp_path, split="test")[0].prompt == "test"
    with pytest.raises(TunedeckError, match="no dev.jsonl"):
        load_examples(tmp_path, split="dev")


def test_parquet_rows_and_wrong_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"prompt": ["q1", "q2", "q3"], "completion": ["a1", "a2", None]})
    pq.write_table(table, tmp_path / "d.parquet")
    report = validate(tmp_path / "d.parquet")
    assert [(i.code, i.line, i.field, i.unit) for i in report.issues] == [
        ("wrong_type", 3, "completion", "row")]
    assert "row 3" in str(report.issues[0])
    assert [r.prompt for r in load_examples(tmp_path / "d.parquet", limit=2)] == ["q1", "q2"]


def test_save_to_disk_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({
        "train": Dataset.from_list([{"question": "q1", "answer": "a1"}]),
        "test": Dataset.from_list([{"question": "q2", "answer": "a2"}]),
    }).save_to_disk(str(tmp_path / "ds"))
    mapping = {"question": "prompt", "answer": "completion"}
    assert load_examples(tmp_path / "ds", mapping=mapping)[0].prompt == "q1"
    assert load_examples(tmp_path / "ds", mapping=mapping, split="test")[0].prompt == "q2"


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunedeckError, match="offline"):
        load_examples("someone/some-dataset")

"""One split-file rule: the readers and training find the same file for every split."""

import json

import pytest

from engine.data import open_source
from engine.data.split_files import split_file, split_file_names
from engine.errors import TunedeckError
from engine.training import data as training_data

ROW = {"prompt": "2+2?", "completion": "4"}
LAYOUTS = [
    ("train.jsonl",), ("train.json",), ("train.csv",), ("val.jsonl",), ("valid.jsonl",),
    ("dev.jsonl",), ("validation.jsonl",), ("test.jsonl",), ("train.jsonl", "val.jsonl"),
    ("train.jsonl", "train.json"), ("notes.jsonl",),
]


def write(folder, name):
    path = folder / name
    if name.endswith(".csv"):
        path.write_text("prompt,completion\n2+2?,4\n")
    elif name.endswith(".json"):
        path.write_text(json.dumps([ROW]))
    else:
        path.write_text(json.dumps(ROW) + "\n")


def reader_finds(folder, split):
    try:
        source = open_source(folder, split)
    except TunedeckError:
        return None
    return source


@pytest.mark.parametrize("names", LAYOUTS, ids="+".join)
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_readers_and_training_agree_on_every_folder(tmp_path, names, split):
    for name in names:
        write(tmp_path, name)
    found = split_file(tmp_path, split)
    assert training_data.split_file(tmp_path, split) == found
    assert training_data.has_split(tmp_path, split) == (found is not None)
    assert (reader_finds(tmp_path, split) is not None) == (found is not None)


def test_a_folder_with_only_val_jsonl_has_a_validation_split_and_no_train(tmp_path):
    write(tmp_path, "val.jsonl")
    assert split_file(tmp_path, "validation") == tmp_path / "val.jsonl"
    assert training_data.has_split(tmp_path, "validation")
    assert len(list(open_source(tmp_path, "validation").records())) == 1
    assert not training_data.has_split(tmp_path, "train")
    with pytest.raises(TunedeckError, match="no train"):
        open_source(tmp_path)


def test_jsonl_comes_before_json_and_a_file_is_its_own_train_split(tmp_path):
    write(tmp_path, "train.json")
    write(tmp_path, "train.jsonl")
    assert split_file(tmp_path, "train") == tmp_path / "train.jsonl"
    assert split_file(tmp_path / "train.json", "train") == tmp_path / "train.json"
    assert split_file(tmp_path / "train.json", "validation") is None
    assert split_file_names("validation")[:2] == ["validation.jsonl", "validation.ndjson"]

"""The one rule for which file holds which split of a dataset.

A dataset is a file (its rows are the train split; it has no other) or a folder holding one
file per split. A file names a split by its stem and is read by its extension:

    train       train.*
    validation  validation.*, valid.*, val.*, dev.*
    test        test.*

with the extensions in `EXTENSIONS`, tried in that order for each name (``train.jsonl`` before
``train.json``). A split not in the table is the file ``<split>.*``. A folder must hold the
split that is asked for; the train split when none is named. The readers (`engine.data.readers`)
and training (`engine.training.data`) both ask this module, so they agree on every folder.
Imports nothing from the rest of tunedeck.
"""

from __future__ import annotations

from pathlib import Path

SPLIT_NAMES = ("train", "validation", "test")
EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
SPLIT_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}


def split_file_names(split: str) -> list[str]:
    """The file names that hold `split` in a folder, in the order they are looked for."""
    return [stem + ext for stem in SPLIT_STEMS.get(split, (split,)) for ext in EXTENSIONS]


def split_file(path: str | Path, split: str | None = None) -> Path | None:
    """The file holding `split` (train when None): a file is its own train split; in a folder,
    the first of `split_file_names(split)` that exists; None when there is none."""
    path, split = Path(path), split or "train"
    if path.is_file():
        return path if split == "train" else None
    if not path.is_dir():
        return None
    for name in split_file_names(split):
        candidate = path / name
        if candidate.is_file():
            return candidate
    return None


def has_split(path: str | Path, split: str) -> bool:
    return split_file(path, split) is not None

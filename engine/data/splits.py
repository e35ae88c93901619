"""Seeded train / validation / test splits, and exact-duplicate leakage across splits."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.data.schema import Example
from engine.errors import TunedeckError


def split_examples(examples: Sequence[Example], ratios: Sequence[float] = (0.8, 0.1, 0.1),
                   seed: int = 0, names: Sequence[str] = ("train", "validation", "test"),
                   dedupe: bool = True) -> dict[str, list[Example]]:
    """Shuffle with `seed` and cut by `ratios`. With `dedupe`, identical rows land in the same
    split, so no exact duplicate can leak from train into validation or test."""
    if len(ratios) != len(names) or any(r < 0 for r in ratios) or not sum(ratios):
        raise TunedeckError("split ratios must be one non-negative number per split")
    groups: dict[tuple, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.key() if dedupe else (id(ex),), []).append(ex)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    total = sum(ratios)
    n = len(examples)
    bounds, acc = [], 0.0
    for r in ratios:
        acc += r
        bounds.append(round(n * acc / total))
    out: dict[str, list[Example]] = {name: [] for name in names}
    placed = 0
    k = 0
    for group in order:
        while k < len(names) - 1 and placed >= bounds[k]:
            k += 1
        out[names[k]].extend(group)
        placed += len(group)
    return out


@dataclass
class Leak:
    split: str
    line: int
    other_split: str
    other_line: int

    def __str__(self) -> str:
        return (f"{self.split} line {self.line} is an exact duplicate of "
                f"{self.other_split} line {self.other_line}")


def leakage(splits: dict[str, Sequence[Example]]) -> list[Leak]:
    """Rows of a later split that repeat a row of an earlier split (train first)."""
    seen: dict[tuple, tuple[str, int]] = {}
    leaks: list[Leak] = []
    for name, rows in splits.items():
        local: dict[tuple, int] = {}
        for ex in rows:
            key = ex.key()
            if key in seen and seen[key][0] != name:
                leaks.append(Leak(name, ex.line, *seen[key]))
            local.setdefault(key, ex.line)
        for key, line in local.items():
            seen.setdefault(key, (name, line))
    return leaks


def example_row(ex: Example, fields: Sequence[str]) -> dict:
    """An example as a row again: the non-empty `fields`, or the whole conversation when it came
    as one, its label, and the columns tunedeck does not read (ids, metadata): a split keeps all
    of every row."""
    if ex.messages is not None and not (ex.chosen or ex.rejected):
        row: dict = {"messages": list(ex.messages)}
    else:
        row = {f: getattr(ex, f) for f in fields if getattr(ex, f) not in ("", None)}
        if ex.messages is not None:  # a preference row whose prompt is a conversation
            row["prompt"] = list(ex.messages)
    if ex.label is not None:
        row["label"] = ex.label
    for key, value in ex.extra.items():
        row.setdefault(key, value)
    return row


def write_jsonl(examples: Sequence[Example], path: Path,
                fields: Sequence[str] = ("instruction", "prompt", "completion")) -> Path:
    """Write examples as JSONL rows (`example_row`), atomically: the caller checks the target
    first (`engine.safe_write.check_target`)."""
    from engine.safe_write import output_file

    with output_file(path) as fh:
        for ex in examples:
            fh.write(json.dumps(example_row(ex, fields), ensure_ascii=False) + "\n")
    return path

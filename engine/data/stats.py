"""Dataset statistics with the model's own tokenizer: token lengths, a histogram, labels."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.data.schema import Example
from engine.data.tokens import TokenCounter
from engine.data.validate import Report

# Completions this short, with this few distinct values, are categories (labels), not text.
LABEL_MAX_CHARS = 40
LABEL_MAX_DISTINCT = 20


@dataclass
class Summary:
    min: int = 0
    median: float = 0.0
    p95: int = 0
    max: int = 0
    mean: float = 0.0

    @classmethod
    def of(cls, values: Sequence[int]) -> Summary:
        if not values:
            return cls()
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered))) - 1))]
        return cls(ordered[0], float(statistics.median(ordered)), p95, ordered[-1],
                   sum(ordered) / len(ordered))


@dataclass
class Stats:
    rows: int
    prompt_tokens: Summary
    completion_tokens: Summary
    total_tokens: Summary  # prompt + completion + template overhead
    template_overhead: int
    histogram: list[tuple[int, int, int]]  # (low, high, count) over total tokens
    labels: dict[str, int] = field(default_factory=dict)  # empty unless completions are labels
    duplicates: int = 0
    lengths: list[int] = field(default_factory=list)  # total tokens per row, in order


def histogram(values: Sequence[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """Equal-width bins over [min, max]; each is (low, high inclusive, count)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = Counter((v - lo) // width for v in values)
    n = -(-(hi - lo + 1) // width)
    return [(lo + i * width, lo + (i + 1) * width - 1, counts.get(i, 0)) for i in range(n)]


def label_distribution(examples: Iterable[Example]) -> dict[str, int]:
    """Counts of each completion when completions look like categories, else {}."""
    counts: Counter[str] = Counter()
    for ex in examples:
        if ex.label is not None:
            counts["desirable" if ex.label else "undesirable"] += 1
            continue
        text = ex.completion.strip()
        if not text or len(text) > LABEL_MAX_CHARS or "\n" in text:
            return {}
        counts[text] += 1
        if len(counts) > LABEL_MAX_DISTINCT:
            return {}
    return dict(counts.most_common())


def compute_stats(examples: Sequence[Example], tokenizer: Any, bins: int = 10,
                  report: Report | None = None) -> Stats:
    """Token lengths, their histogram, labels and exact duplicates of `examples`.

    `report` is the validation report the examples came from: when they are all of its scanned
    rows, its duplicate count is theirs, so they are not hashed a second time.
    """
    counter = TokenCounter(tokenizer)
    pairs: list[tuple[int, int]] = []
    for i in range(0, len(examples), 512):
        pairs.extend(counter.lengths(examples[i:i + 512]))
    prompts = [p for p, _ in pairs]
    completions = [c for _, c in pairs]
    totals = [p + c + counter.overhead for p, c in pairs]
    if report is not None and len(examples) == report.scanned:
        dups = report.duplicates
    else:
        dups = _count_duplicates(examples)
    return Stats(rows=len(examples), prompt_tokens=Summary.of(prompts),
                 completion_tokens=Summary.of(completions), total_tokens=Summary.of(totals),
                 template_overhead=counter.overhead, histogram=histogram(totals, bins),
                 labels=label_distribution(examples), duplicates=dups, lengths=totals)


def _count_duplicates(examples: Iterable[Example]) -> int:
    seen: set[tuple] = set()
    dups = 0
    for ex in examples:
        key = ex.key()
        if key in seen:
            dups += 1
        seen.add(key)
    return dups

"""Human judgments of completions, and the training sets made from them.

Any completion can be rated: a playground try, a training run's sample, an evaluation output, or
one side of an A/B comparison. A rating is thumbs up / down, 1-5 stars, an optional corrected
("ideal") completion and a comment; an A/B pair records which side won (or a tie). Each
completion keeps its provenance: model, adapter, run, template, strategy and parameters.

- `schema`: the tables (one migration of the history database, `engine.store`), the records
  (`Rating`, `Completion`, `Pair`) and the shared names (sources, choices, star thresholds).
- `store`: `RatingStore`, reading and writing them.
- `export`: the SFT / DPO / KTO training sets made from them, and the report of each.
- `ab`: A/B generation (two completions of one prompt as a pair).

The names below are the package's public face; import them from here.
"""

from importlib import import_module
from typing import Any

from engine.ratings.schema import (
    BAD_STARS,
    CHOICES,
    FORMATS,
    GOOD_STARS,
    SOURCES,
    Completion,
    Pair,
    QueueItem,
    Rating,
    chatml_messages,
)

# The store, the exports and A/B load on first use (PEP 562), so that a light importer (the
# CLI's argument parser wants SOURCES) does not pull in the database and generation code.
_LAZY = {"RatingStore": "store", "ExportReport": "export", "build_export": "export",
         "write_export": "export", "ab_kind": "ab", "generate_ab": "ab", "prompt_ids": "ab"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"engine.ratings.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'engine.ratings' has no attribute {name!r}")


__all__ = [
    "BAD_STARS", "CHOICES", "FORMATS", "GOOD_STARS", "SOURCES", "Completion", "ExportReport",
    "Pair", "QueueItem", "Rating", "RatingStore", "ab_kind", "build_export", "chatml_messages",
    "generate_ab", "prompt_ids", "write_export",
]

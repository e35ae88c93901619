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

from engine.ratings.ab import ab_kind, generate_ab, prompt_ids
from engine.ratings.export import ExportReport, build_export, write_export
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
from engine.ratings.store import RatingStore

__all__ = [
    "BAD_STARS", "CHOICES", "FORMATS", "GOOD_STARS", "SOURCES", "Completion", "ExportReport",
    "Pair", "QueueItem", "Rating", "RatingStore", "ab_kind", "build_export", "chatml_messages",
    "generate_ab", "prompt_ids", "write_export",
]

"""Datasets: load, normalize, validate, inspect and split.

Every supported layout becomes an `Example` (see `schema.py`). `load_examples` is what trainers,
prompt strategies and evaluation call; `validate` is the full report the CLI and the Data screen
show. Nothing here imports heavy libraries at import time.
"""

from engine.data.readers import MAX_LINE_BYTES, open_source
from engine.data.samples import SAMPLE_DIR, SAMPLE_NAMES, sample_path, sql_sample_db
from engine.data.schema import (
    SCHEMAS,
    Example,
    apply_mapping,
    detect_schema,
    normalize,
    parse_mapping,
)
from engine.data.splits import Leak, leakage, split_examples, write_jsonl
from engine.data.stats import Stats, Summary, compute_stats, histogram, label_distribution
from engine.data.validate import (
    OVERLONG_CHOICES,
    Issue,
    Report,
    load_examples,
    scan,
    validate,
)

__all__ = [
    "MAX_LINE_BYTES", "OVERLONG_CHOICES", "SAMPLE_DIR", "SAMPLE_NAMES", "SCHEMAS", "Example",
    "Issue", "Leak", "Report", "Stats", "Summary", "apply_mapping", "compute_stats",
    "detect_schema", "histogram", "label_distribution", "leakage", "load_examples", "normalize",
    "open_source", "parse_mapping", "sample_path", "scan", "split_examples", "sql_sample_db",
    "validate", "write_jsonl",
]

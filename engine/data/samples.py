"""The datasets the project ships under `sample_data/`, and the text-to-SQL database."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from engine.errors import TunedeckError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
SAMPLE_NAMES = ("text_to_sql", "sentiment", "arithmetic")
SQL_DB_NAME = "retail.db"
SAMPLE_SPLITS = (("train", 0.7), ("validation", 0.15), ("test", 0.15))


def sample_path(name: str, split: str = "train") -> Path:
    """`sample_data/<name>/<split>.jsonl` for one of `SAMPLE_NAMES`."""
    if name not in SAMPLE_NAMES:
        raise TunedeckError(f"no sample dataset '{name}'; choose one of {', '.join(SAMPLE_NAMES)}")
    path = SAMPLE_DIR / name / f"{split}.jsonl"
    if not path.is_file():
        raise TunedeckError(f"{path}: missing; regenerate it with "
                            f"python sample_data/{name}/generate.py")
    return path


def write_sample_splits(rows: list[dict], folder: Path, seed: int) -> dict[str, int]:
    """Shuffle generated rows with `seed` and write them as `SAMPLE_SPLITS` JSONL files; the
    generators under `sample_data/` share this so every dataset is cut the same way."""
    rng = random.Random(seed)
    rows = list(rows)
    rng.shuffle(rows)
    counts, start = {}, 0
    for i, (name, share) in enumerate(SAMPLE_SPLITS):
        end = len(rows) if i == len(SAMPLE_SPLITS) - 1 else start + round(share * len(rows))
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows[start:end]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[name], start = end - start, end
    return counts


def _build_module():
    script = SAMPLE_DIR / "text_to_sql" / "build_db.py"
    spec = importlib.util.spec_from_file_location("tunedeck_sample_build_db", script)
    if spec is None or spec.loader is None:
        raise TunedeckError(f"{script}: missing; the text-to-SQL sample cannot be built")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sql_sample_db(rebuild: bool = False) -> Path:
    """The retail SQLite database the text-to-SQL sample runs against (built on first use into
    the data home; the build is deterministic, so every copy holds the same rows)."""
    from engine import paths

    target = paths.home() / "sample_data" / SQL_DB_NAME
    if target.is_file() and not rebuild:
        return target
    paths.ensure_dir(target.parent)
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _build_module().build(tmp)
    tmp.replace(target)
    return target

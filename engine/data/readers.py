"""Readers: a dataset file (or folder, or hub id) → raw rows, one at a time.

A reader yields `Record`s: a row (a dict) or a problem found before any field is looked at
(invalid JSON, a line that is not an object, bytes that are not UTF-8, a BOM, a blank line, an
over-long line). JSONL and CSV are read line by line, Parquet batch by batch, so memory stays
bounded whatever the file size.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.split_files import (
    EXTENSIONS,
    SPLIT_NAMES,  # noqa: F401  (re-exported)
    split_file,
)
from engine.errors import TunedeckError, first_line

MAX_LINE_BYTES = 1_000_000  # a JSONL line longer than this is reported, never held in memory


@dataclass
class Record:
    line: int  # 1-based line (JSONL/JSON) or row (CSV/Parquet/Arrow)
    row: dict | None = None
    code: str = ""  # set when the record is a problem, not (or not only) a row
    severity: str = ""  # "error" (no row) | "warning" (row still usable, or nothing lost)
    message: str = ""
    fix: str = ""
    field: str | None = None


_BOM = b"\xef\xbb\xbf"


def _bom_record() -> Record:
    """The one BOM warning every reader yields, so it reads the same whatever the format."""
    return Record(1, code="bom", severity="warning",
                  message="file starts with a UTF-8 byte-order mark (BOM)",
                  fix="save the file as UTF-8 without BOM (it was skipped)")


class Source:
    """One readable dataset: where it is, how its positions are named, and its rows."""

    unit = "line"

    def __init__(self, path: Path, display: str | None = None) -> None:
        self.path = path
        self.display = display or str(path)
        self._total = max(1, path.stat().st_size) if path.exists() and path.is_file() else 1
        self._done = 0

    def fraction(self) -> float:
        return min(1.0, self._done / self._total)

    def records(self) -> Iterator[Record]:  # pragma: no cover - abstract
        raise NotImplementedError


class JsonlSource(Source):
    def __init__(self, path: Path, display: str | None = None,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__(path, display)
        self.max_line_bytes = max_line_bytes

    def records(self) -> Iterator[Record]:
        decoder = json.JSONDecoder()
        with open(self.path, "rb") as fh:
            number = 0
            while True:
                raw = fh.readline(self.max_line_bytes + 1)
                if not raw:
                    break
                number += 1
                self._done += len(raw)
                if len(raw) > self.max_line_bytes and not raw.endswith(b"\n"):
                    size = len(raw) + _skip_rest_of_line(fh, self)
                    yield Record(number, code="long_line", severity="error",
                                 message=f"line is {size:,} bytes, over the limit of "
                                 f"{self.max_line_bytes:,}; it was not read",
                                 fix="split the row, or raise the limit (--max-line-bytes)")
                    continue
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                    yield _bom_record()
                yield from _jsonl_line(number, raw, decoder)


def _skip_rest_of_line(fh: io.BufferedReader, source: Source) -> int:
    skipped = 0
    while True:
        chunk = fh.readline(1 << 20)
        skipped += len(chunk)
        source._done += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _jsonl_line(number: int, raw: bytes, decoder: json.JSONDecoder) -> Iterator[Record]:
    try:
        stripped = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        yield Record(number, code="not_utf8", severity="error",
                     message=f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not "
                     "valid UTF-8", fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
        return
    if not stripped:
        yield Record(number, code="blank_line", severity="warning", message="blank line",
                     fix="remove the empty line (it was skipped)")
        return
    try:
        value = decoder.decode(stripped)
    except json.JSONDecodeError as err:
        yield Record(number, code="invalid_json", severity="error",
                     message=f"invalid JSON at column {err.colno}: {err.msg}",
                     fix="fix the JSON syntax; each line must be one complete JSON object")
        return
    except RecursionError:
        yield _too_deep(number)
        return
    if isinstance(value, dict) and (b"\\ud" in raw or b"\\uD" in raw):
        bad = _surrogate_field(value)
        if bad is not None:
            yield _surrogate_record(number, bad)
            return
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number")
        yield Record(number, code="not_object", severity="error",
                     message=f"line is {kind}, not a JSON object",
                     fix="write each row as an object: {\"prompt\": …, \"completion\": …}")
        return
    yield Record(number, row=value)


def _too_deep(line: int) -> Record:
    return Record(line, code="invalid_json", severity="error",
                  message="JSON nested too deeply to read (lists or objects inside each other "
                  "hundreds of levels deep)", fix="flatten the row: text fields hold strings")


def _surrogate_field(row: dict) -> str | None:
    """The first field (``messages[1].content``) holding a lone surrogate (``"\\ud800"``): JSON
    allows the escape, but it is no character, and tokenizers and UTF-8 writers fail on it."""
    stack: list[tuple[str, Any]] = [(k, v) for k, v in reversed(row.items())]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _has_lone_surrogate(value):
                return path
        elif isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_record(line: int, field: str) -> Record:
    return Record(line, code="lone_surrogate", severity="error", field=field,
                  message=f"'{field}' holds a lone surrogate escape (\\ud800–\\udfff), "
                  "which is not a character", fix="remove the escape, or write the whole "
                  "surrogate pair (e.g. \\ud83d\\ude00) or the character itself")


class JsonArraySource(Source):
    """A JSON file holding one array of objects; positions are the line each item starts on."""

    def records(self) -> Iterator[Record]:
        data = self.path.read_bytes()
        self._done = len(data)
        start = 0
        if data.startswith(_BOM):
            start = len(_BOM)
            yield _bom_record()
        try:
            text = data[start:].decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: start + err.start].count(b"\n") + 1
            yield Record(line, code="not_utf8", severity="error",
                         message=f"byte 0x{data[start + err.start]:02x} is not valid UTF-8; the "
                         "file could not be read", fix="re-save the file as UTF-8")
            return
        decoder = json.JSONDecoder()
        escapes = "\\ud" in text or "\\uD" in text  # rows are only searched when it matters
        pos = _skip_ws(text, 0)
        pos += 1  # the opening bracket, checked by the caller
        line = text.count("\n", 0, pos) + 1
        last = pos
        while True:
            pos = _skip_ws(text, pos)
            if pos < len(text) and text[pos] == "]":
                return
            line += text.count("\n", last, pos)
            last = pos
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                yield Record(err.lineno, code="invalid_json", severity="error",
                             message=f"invalid JSON at column {err.colno}: {err.msg}; the rest "
                             "of the file could not be read", fix="fix the JSON syntax")
                return
            except RecursionError:
                yield _too_deep(line)
                return
            bad = _surrogate_field(value) if escapes and isinstance(value, dict) else None
            if bad is not None:
                yield _surrogate_record(line, bad)
            elif isinstance(value, dict):
                yield Record(line, row=value)
            else:
                yield Record(line, code="not_object", severity="error",
                             message="array item is not a JSON object",
                             fix="make every item an object: {\"prompt\": …, \"completion\": …}")
            pos = _skip_ws(text, end)
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos >= len(text) or text[pos] != "]":
                lineno = text.count("\n", 0, pos) + 1
                yield Record(lineno, code="invalid_json", severity="error",
                             message="expected ',' or ']' after an array item; the rest of the "
                             "file could not be read", fix="fix the JSON syntax")
                return


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


_JSON_COLUMNS = ("messages", "prompt", "completion", "chosen", "rejected")


class CsvSource(Source):
    """CSV with a header row; positions are data rows (the header is row 0)."""

    unit = "row"

    def records(self) -> Iterator[Record]:
        with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            head = fh.read(1)
            if head != "\ufeff":
                fh.seek(0)
            reader = csv.reader(fh, delimiter="\t" if self.path.suffix.lower() == ".tsv" else ",")
            header = next(reader, None)
            if head == "\ufeff":
                yield _bom_record()
            if header is None:
                return
            header = [h.strip() for h in header]
            for number, cells in enumerate(reader, start=1):
                self._done = fh.buffer.tell()  # read-ahead makes it approximate: fine for progress
                if not any(c.strip() for c in cells):
                    yield Record(number, code="blank_line", severity="warning",
                                 message="blank row", fix="remove the empty row (it was skipped)")
                    continue
                bad = next((h for h, c in zip(header, cells, strict=False) if _has_surrogate(c)),
                           None)
                if bad is not None:
                    yield Record(number, code="not_utf8", severity="error",
                                 message=f"'{bad}' holds bytes that are not valid UTF-8",
                                 fix="re-save the file as UTF-8", field=bad)
                    continue
                if len(cells) > len(header):
                    yield Record(number, code="bad_csv_row", severity="error",
                                 message=f"row has {len(cells)} cells but the header has "
                                 f"{len(header)}", fix="quote cells that contain commas")
                    continue
                row = {h: _csv_value(h, c) for h, c in zip(header, cells, strict=False)}
                yield Record(number, row=row)


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _csv_value(name: str, cell: str) -> Any:
    if name == "label":
        low = cell.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
    if name in _JSON_COLUMNS and cell.lstrip().startswith("["):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    return cell


class ParquetSource(Source):
    unit = "row"

    def records(self) -> Iterator[Record]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise TunedeckError(f"{self.display}: not a readable Parquet file ({err}); "
                                "re-export it, or convert it to JSONL") from err
        total = max(1, parquet.metadata.num_rows)
        number = 0
        for batch in parquet.iter_batches(batch_size=2048):
            for row in batch.to_pylist():
                number += 1
                yield Record(number, row=row)
            self._done, self._total = number, total


class ArrowSource(Source):
    """A `datasets` object: a `save_to_disk` folder or a hub download."""

    unit = "row"

    def __init__(self, dataset: Any, display: str) -> None:
        self.path = Path(display)
        self.display = display
        self.dataset = dataset
        self._total = max(1, len(dataset))
        self._done = 0

    def records(self) -> Iterator[Record]:
        for number, row in enumerate(self.dataset, start=1):
            self._done = number
            yield Record(number, row=dict(row))


def open_source(path: str | Path, split: str | None = None,
                max_line_bytes: int = MAX_LINE_BYTES) -> Source:
    """The right reader for a file, a dataset folder, a `save_to_disk` folder or a hub id."""
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
            return _from_disk(p, split)
        chosen = split_file(p, split)  # the one rule: engine.data.split_files
        if chosen is None:
            raise TunedeckError(f"{p}: no {split or 'train'}.jsonl (or .json/.csv/.parquet) in "
                                "this folder; pass a file, or a folder holding train.jsonl / "
                                "validation.jsonl / test.jsonl")
        p = chosen
    elif not p.exists():
        if _looks_like_hub_id(str(path)):
            return _from_hub(str(path), split)
        raise TunedeckError(f"{path}: no such file or folder; check the path")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return ParquetSource(p)
    if suffix in (".csv", ".tsv"):
        return CsvSource(p)
    if suffix == ".json" and _first_char(p) == "[":
        return JsonArraySource(p)
    return JsonlSource(p, max_line_bytes=max_line_bytes)


def _first_char(p: Path) -> str:
    with open(p, "rb") as fh:
        head = fh.read(4096).lstrip(_BOM).lstrip()
    return chr(head[0]) if head else ""


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) \
        and not any(text.lower().endswith(e) for e in EXTENSIONS)


def _from_disk(folder: Path, split: str | None) -> Source:
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(folder))
    if isinstance(data, DatasetDict):
        name = split or ("train" if "train" in data else next(iter(data)))
        if name not in data:
            raise TunedeckError(f"{folder}: no split '{name}'; it has {', '.join(data)}")
        return ArrowSource(data[name], f"{folder}[{name}]")
    return ArrowSource(data, str(folder))


def _from_hub(repo_id: str, split: str | None) -> Source:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise TunedeckError(f"{repo_id}: no such file, and the hub is offline (HF_HUB_OFFLINE=1); "
                            "download the dataset first or pass a local file")
    from datasets import load_dataset

    try:
        data = load_dataset(repo_id, split=split or "train")
    except Exception as err:  # network, auth and missing-repo errors all end here
        raise TunedeckError(f"{repo_id}: not a local file, and loading it from the hub failed "
                            f"({type(err).__name__}: {first_line(err)})"
                            "; check the name and your connection") from err
    return ArrowSource(data, f"{repo_id}[{split or 'train'}]")

"""Listings a person can copy from and a script can read.

Every list command renders through `emit`: ``--format json`` prints the records as a JSON array
on stdout; the table never wraps or cuts a key column (a run id is what `resume`, `stop` and
`eval --adapter` need, whole). On a narrow terminal the long text columns are shortened first,
then the least important columns are left out, and stderr says which. Piped output is not
limited to the terminal's width at all: a pipe has none, and rich's 80-column default would cut.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FORMATS = ("table", "json")
_MIN_SHRUNK = 12  # a shortened text column keeps at least this many characters


@dataclass
class Column:
    header: str
    key: str
    show: Callable[[Any], str] = lambda v: "-" if v is None or v == "" else str(v)
    key_column: bool = False  # never shortened, never left out (ids, references)
    shrink: bool = False      # free text that may be cut with … when space is short
    drop: int = 0             # higher leaves first on a narrow terminal; 0 never leaves


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", dest="list_format",
                        help="table (default) or json (an array of objects, for scripts)")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        # A diverged loss: valid JSON (strict readers such as jq refuse a bare NaN), still said.
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines() or [""]), default=0)


def _table_width(widths: list[int]) -> int:
    # rich's default box: one border per column plus the left edge, one space of padding each side
    return sum(widths) + 3 * len(widths) + 1


def fit_columns(columns: list[Column], cells: list[list[str]],
                width: int | None) -> tuple[list[int], dict[int, int]]:
    """Which columns to show (indices) and the shortened widths, so the table fits `width`."""
    natural = [max([_cell_width(c.header)] + [_cell_width(row[i]) for row in cells])
               for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    limits: dict[int, int] = {}
    if width is None:
        return shown, limits

    def total() -> int:
        return _table_width([limits.get(i, natural[i]) for i in shown])

    while total() > width:
        shrinkable = [i for i in shown if columns[i].shrink
                      and limits.get(i, natural[i]) > max(_MIN_SHRUNK, _cell_width(columns[i].header))]
        if shrinkable:
            widest = max(shrinkable, key=lambda i: limits.get(i, natural[i]))
            floor = max(_MIN_SHRUNK, _cell_width(columns[widest].header))
            limits[widest] = max(floor, limits.get(widest, natural[widest]) - (total() - width))
            continue
        droppable = [i for i in shown if columns[i].drop and not columns[i].key_column]
        if not droppable:
            break  # only key columns left: wider than the terminal, but whole
        shown.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    return shown, limits


def terminal_width() -> int | None:
    """The terminal's width, or None when stdout is a pipe or a file (no limit)."""
    if not sys.stdout.isatty():
        return None
    from rich.console import Console

    return Console().width


def emit(records: list[dict[str, Any]], columns: list[Column], *, fmt: str, title: str,
         empty: str, footer: str | None = None, width: int | None = -1) -> int:
    """Print `records` as a table or JSON. ``width=-1``: the terminal's, none when piped."""
    if fmt == "json":
        print(json.dumps([_jsonable(r) for r in records], indent=2, ensure_ascii=False,
                         allow_nan=False))
        return 0
    from rich.console import Console
    from rich.table import Table

    err = Console(stderr=True, highlight=False)
    if not records:
        print(empty)
        return 0
    if width == -1:
        width = terminal_width()
    cells = [[c.show(r.get(c.key)) for c in columns] for r in records]
    shown, limits = fit_columns(columns, cells, width)
    table = Table(title=title, title_justify="left")
    for i in shown:
        c = columns[i]
        table.add_column(c.header, no_wrap=True, overflow="ellipsis", max_width=limits.get(i))
    for row in cells:
        table.add_row(*(row[i] for i in shown))
    natural = _table_width([limits.get(i, max([_cell_width(columns[i].header)]
                                              + [_cell_width(row[i]) for row in cells]))
                            for i in shown])
    out = Console(highlight=False, width=max(natural, width or 0), soft_wrap=False)
    out.print(table)
    left_out = [columns[i].header for i in range(len(columns)) if i not in shown]
    if left_out:
        err.print(f"Left out for the terminal's width: {', '.join(left_out)} (widen it, or use "
                  "--format json for every field).")
    if footer:
        err.print(footer)
    return 0

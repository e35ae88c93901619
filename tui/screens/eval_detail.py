"""One evaluated example: the input and reference, then every column's output beside it.

↑ / ↓ pick a column (its full output and the scorer's note show below), ← / → move to the
previous / next example, 1-5 / + / - / e rate the highlighted column's output (recorded in the
ratings database with source "eval", so it can feed SFT / DPO / KTO exports), Escape goes back.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.base import WorkbenchScreen
from tui.widgets.rating_bar import RATING_BINDINGS, RatingBar, RatingKeys

STATUS_TEXT = {"correct": "✓ correct", "wrong": "✗ wrong", "syntax_error": "syntax error",
               "exec_error": "query failed", "no_answer": "no answer",
               "reference_error": "reference broken"}


def _one_line(text: Any, width: int = 70) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class EvalDetailScreen(RatingKeys, WorkbenchScreen):
    HELP_TITLE = "Evaluated example"
    HELP = ("Every column's output for one example, beside the reference. ↑ / ↓ choose a column, "
            "← / → the previous / next example; 1-5 stars, + / - thumbs and e (edit the ideal "
            "answer) rate the chosen column's output.")
    BINDINGS = [
        *RATING_BINDINGS,
        Binding("escape", "back", "Back"),
        Binding("left", "step(-1)", "Prev example"),
        Binding("right", "step(1)", "Next example"),
    ]
    DEFAULT_CSS = """
    EvalDetailScreen #detail-head { height: auto; max-height: 8; padding: 0 1; }
    EvalDetailScreen #detail-columns { height: auto; max-height: 10; }
    EvalDetailScreen #detail-output-box { height: 1fr; border: round $panel-lighten-2; }
    EvalDetailScreen #detail-output { padding: 0 1; }
    """

    def __init__(self, result: Any, index: int = 0) -> None:
        super().__init__()
        self.result = result
        self.index = index
        self._store: Any = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="detail-head")
        yield DataTable(id="detail-columns", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="detail-output-box"):
            yield Static(id="detail-output", markup=False)
        yield RatingBar(self.store)
        yield Footer()

    @property
    def store(self) -> Any:
        if self._store is None:
            from engine.ratings import RatingStore

            self._store = RatingStore()
        return self._store

    def on_mount(self) -> None:
        self.query_one("#detail-columns", DataTable).add_columns("column", "result", "answer")
        self.show_example()
        self.query_one("#detail-columns", DataTable).focus()

    def on_unmount(self) -> None:
        if self._store is not None:
            self._store.close()

    # ------------------------------------------------------------------ data
    @property
    def keys(self) -> list[str]:
        longest = max((c.rows for c in self.result.columns), key=len, default=[])
        return [r["key"] for r in longest]

    def rows(self) -> list[tuple[Any, dict[str, Any] | None]]:
        """(column result, this example's row in it, or None) for every column."""
        key = self.keys[self.index]
        out = []
        for column in self.result.columns:
            row = next((r for r in column.rows if r["key"] == key), None)
            out.append((column, row))
        return out

    def show_example(self) -> None:
        rows = self.rows()
        first = next(row for _, row in rows if row is not None)
        head = self.query_one("#detail-head", Static)
        head.update(
            f"[b]Example {self.index + 1}/{len(self.keys)}[/b] (line {first.get('line', '?')})\n"
            f"[b]Input:[/b] {_escape(first.get('input', ''))}\n"
            f"[b]Reference:[/b] {_escape(first.get('reference', ''))}")
        table = self.query_one("#detail-columns", DataTable)
        cursor = table.cursor_row if table.row_count else 0
        table.clear()
        for column, row in rows:
            if row is None:
                table.add_row(column.column.name, "not run", "")
            else:
                table.add_row(column.column.name, STATUS_TEXT.get(row["status"], row["status"]),
                              _one_line(row.get("final") or row.get("output"), 60))
        table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
        self.show_column(table.cursor_row)

    def show_column(self, index: int) -> None:
        rows = self.rows()
        if not 0 <= index < len(rows):
            return
        column, row = rows[index]
        output = self.query_one("#detail-output", Static)
        box = self.query_one("#detail-output-box")
        box.border_title = f"{column.column.name}: output"
        bar = self.query_one(RatingBar)
        if row is None:
            output.update("This column did not reach this example (cancelled).")
            bar.show(None)
            return
        lines = [row.get("output", "")]
        if row.get("detail"):
            lines += ["", f"[{row['detail']}]"]
        if row.get("samples"):
            lines += ["", f"self-consistency: {len(row['samples'])} samples, agreement "
                          f"{100 * row.get('agreement', 0):.0f}%"]
        output.update("\n".join(lines))
        bar.show(self.completion_for(column, row))

    def completion_for(self, column: Any, row: dict[str, Any]) -> Any:
        """The ratings-database record of this output (created the first time it is shown)."""
        result = self.result
        where = str(result.saved_to) if result.saved_to else result.source
        completion_id = self.store.add_completion(
            source="eval", source_ref=f"eval:{where}:{column.column.name}:{row['key']}",
            prompt=str(row.get("input", "")), completion=str(row.get("output", "")),
            model=result.model, adapter=result.adapter if column.column.adapter else None,
            template=column.template, strategy=column.column.as_dict(),
            extra={"reference": row.get("reference"), "status": row.get("status"),
                   "line": row.get("line"), "eval": where})
        return self.store.get_completion(completion_id)

    # ------------------------------------------------------------------ events
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "detail-columns":
            self.show_column(event.cursor_row)

    def action_step(self, delta: int) -> None:
        new = self.index + delta
        if 0 <= new < len(self.keys):
            self.index = new
            self.show_example()

    def action_back(self) -> None:
        self.app.pop_screen()


def _escape(text: Any) -> str:
    from rich.markup import escape

    return escape(str(text or ""))

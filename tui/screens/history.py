"""History: every try recorded by the Playground and `tunedeck prompt`, newest first.

Pushed over the Playground (Ctrl+O). Enter returns the highlighted try so the Playground can put
it back (template, strategy, parameters, inputs and output); `x` exports all tries to JSONL.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static

from engine.errors import TunedeckError
from tui.screens.base import WorkbenchScreen, describe_error

PAGE = 200
SEARCH_DELAY = 0.25  # seconds of quiet typing before the search runs


def _one_line(text: Any, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def try_row(entry: Any) -> tuple[str, ...]:
    metrics = entry.metrics or {}
    tokens = f"{metrics.get('prompt_tokens', '?')}→{metrics.get('completion_tokens', '?')}"
    return (str(entry.id), entry.created_at.replace("T", " ")[:16], entry.template,
            str((entry.strategy or {}).get("kind", "")), tokens, _one_line(entry.output, 40))


def try_detail(entry: Any) -> Content:
    metrics = entry.metrics or {}
    params = entry.params or {}
    strategy = entry.strategy or {}
    facts = [f"model {entry.model}" + (f" + {entry.adapter}" if entry.adapter else ""),
             f"template {entry.template}", f"strategy {strategy.get('kind', '?')}"]
    if strategy.get("kind") not in ("zero-shot", "cot"):
        facts.append(f"k {strategy.get('k', '?')} ({strategy.get('selection', '?')})")
    facts.append(f"temperature {params.get('temperature', '?')}, max {params.get('max_new_tokens', '?')}")
    timing = []
    if "ttft_s" in metrics:
        timing.append(f"TTFT {metrics['ttft_s']:.2f} s")
    if "tokens_per_s" in metrics:
        timing.append(f"{metrics['tokens_per_s']:.1f} tok/s")
    timing.append(f"{metrics.get('prompt_tokens', '?')} → {metrics.get('completion_tokens', '?')} "
                  "tokens")
    if metrics.get("stop_reason"):
        timing.append(str(metrics["stop_reason"]))
    inputs = "\n".join(f"{k}: {_one_line(v, 300)}" for k, v in (entry.inputs or {}).items())
    return Content.assemble(
        (f"#{entry.id}", "bold $accent"), f"  {entry.created_at}\n",
        (" · ".join(facts), "$text-muted"), "\n", (" · ".join(timing), "$text-muted"), "\n\n",
        ("inputs\n", "bold"), inputs, "\n\n",
        ("output\n", "bold"), (entry.output or "(empty)", "$success"), "\n\n",
        ("prompt\n", "bold"), (entry.prompt_text, "$text-muted"),
    )


class HistoryScreen(WorkbenchScreen):
    """Browse, search and export the tries; Enter hands one back to the Playground."""

    HELP_TITLE = "History"
    HELP = ("Every run of the Playground and of `tunedeck prompt`. Type to search (template, "
            "model, inputs, output); Enter puts the highlighted try back into the Playground.")
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("enter", "use", "Use in Playground", show=True),
        Binding("x", "export", "Export JSONL"),
        Binding("slash", "search", "Search", key_display="/"),
    ]
    DEFAULT_CSS = """
    HistoryScreen #history-search { height: 1; }
    HistoryScreen #history-main { height: 1fr; }
    HistoryScreen #history-table { width: 3fr; height: 1fr; }
    HistoryScreen #history-detail-scroll { width: 2fr; height: 1fr; border-left: vkey $panel-lighten-2; padding: 0 1; }
    HistoryScreen #history-empty { color: $text-muted; height: auto; }
    """

    def __init__(self, store: Any = None) -> None:
        super().__init__()
        self._store = store
        self._own_store = store is None
        self._tries: dict[int, Any] = {}
        self._search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="search: template, model, inputs, output", id="history-search",
                    compact=True)
        with Horizontal(id="history-main"):
            yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="history-detail-scroll"):
                yield Static("", id="history-empty")
                yield Static("", id="history-detail")
        yield Footer()

    def on_mount(self) -> None:
        if self._store is None:
            from engine.store import HistoryStore

            self._store = HistoryStore()
        table = self.query_one("#history-table", DataTable)
        table.add_columns("#", "when (UTC)", "template", "strategy", "tokens", "output")
        self.reload()
        table.focus()

    def reload(self, search: str | None = None) -> None:
        table = self.query_one("#history-table", DataTable)
        table.clear()
        try:
            tries = self._store.list_tries(limit=PAGE, search=search)
        except TunedeckError as err:
            self.query_one("#history-empty", Static).update(describe_error(err))
            return
        self._tries = {t.id: t for t in tries}
        for entry in tries:
            table.add_row(*try_row(entry), key=str(entry.id))
        empty = self.query_one("#history-empty", Static)
        if not tries:
            empty.update("No matching tries." if search else
                         "No tries yet: run something in the Playground (Ctrl+R).")
        else:
            empty.update("")
        empty.display = not tries
        self._show(self._highlighted())

    def _highlighted(self) -> Any:
        table = self.query_one("#history-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._tries.get(int(key)) if key is not None else None

    def _show(self, entry: Any) -> None:
        self.query_one("#history-detail", Static).update(try_detail(entry) if entry else "")

    @on(DataTable.RowHighlighted, "#history-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        self._show(self._tries.get(int(key)) if key is not None else None)

    @on(DataTable.RowSelected, "#history-table")
    def _row_selected(self) -> None:
        self.action_use()

    # The search reads the database on the UI thread: one query per pause in the typing, not
    # one per key.
    @on(Input.Changed, "#history-search")
    def _search_changed(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DELAY, self._run_search)

    def _run_search(self) -> None:
        self._search_timer = None
        self.reload(self.query_one("#history-search", Input).value)

    @on(Input.Submitted, "#history-search")
    def _search_done(self) -> None:
        # Enter right after typing must land on the rows of what was typed.
        if self._search_timer is not None:
            self._search_timer.stop()
            self._run_search()
        self.query_one("#history-table", DataTable).focus()

    def action_search(self) -> None:
        self.query_one("#history-search", Input).focus()

    def action_use(self) -> None:
        entry = self._highlighted()
        if entry is not None:
            self.dismiss(entry)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_export(self) -> None:
        from datetime import datetime, timezone

        from engine import paths

        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = paths.exports_dir() / f"tries-{stamp}.jsonl"
        try:
            count = self._store.export_tries_jsonl(out)
        except (TunedeckError, OSError) as err:
            self.notify(describe_error(err), title="Export failed", severity="error")
            return
        self.notify(f"{count} tries written to {out}", title="Exported")

    def on_unmount(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        if self._own_store and self._store is not None:
            self._store.close()

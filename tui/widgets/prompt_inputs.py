"""The Playground's Inputs tab: one text box per template variable and the dataset that supplies
few-shot examples and rows.

The panel keeps what was typed (values survive template edits that drop and re-add a variable)
and the loaded examples; the screen loads a dataset in its worker and hands the rows here with
`data_loaded`. Edits bubble up as the text boxes' own `TextArea.Changed` messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Label, Static, TextArea

from tui.widgets.strategy_form import form_field


class InputsPanel(VerticalScroll):
    """Template variables, the dataset file and the row being asked."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.values: dict[str, str] = {}
        self.variables: list[str] = []
        self.examples: list[Any] = []
        self.data_path: str = ""
        self.row: int = -1

    def compose(self) -> ComposeResult:
        yield Vertical(id="variables")
        yield Static("Dataset (few-shot examples, rows)", classes="pg-heading")
        yield form_field("file", Input(placeholder="path to JSONL/CSV/Parquet", id="data-path",
                                       compact=True), "data-path")
        yield form_field("row", Input(placeholder="row number, Enter loads", id="data-row",
                                      compact=True), "data-row")
        yield Static("", id="data-status", markup=False)

    # ------------------------------------------------------------------ variables
    def values_for(self, names: list[str]) -> dict[str, str]:
        return {name: self.values.get(name, "") for name in names}

    def sync_variables(self, names: list[str]) -> None:
        """One text box per template variable, in template order; values survive edits."""
        if names == self.variables:
            return
        box = self.query_one("#variables", Vertical)
        for name in self.variables:
            if name not in names:
                for widget in box.query(f"#var-box-{name}"):
                    widget.remove()
        for index, name in enumerate(names):
            if name in self.variables:
                continue
            area = TextArea(self.values.get(name, ""), id=f"var-{name}", soft_wrap=True,
                            classes="pg-var-input")
            widget = Vertical(Label(name), area, classes="pg-var", id=f"var-box-{name}")
            before = next((n for n in names[index + 1:] if n in self.variables), None)
            if before is not None:
                box.mount(widget, before=f"#var-box-{before}")
            else:
                box.mount(widget)
        self.variables = list(names)

    @on(TextArea.Changed, ".pg-var-input")
    def _variable_edited(self, event: TextArea.Changed) -> None:
        name = (event.text_area.id or "").removeprefix("var-")
        self.values[name] = event.text_area.text

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the variable boxes (from a dataset row or a history entry)."""
        for name, value in values.items():
            text = "" if value is None else str(value)
            self.values[name] = text
            if name not in self.variables:
                continue
            for area in self.query(f"#var-{name}").results(TextArea):
                area.load_text(text)

    # ------------------------------------------------------------------ dataset
    def show_data_status(self, text: str) -> None:
        self.query_one("#data-status", Static).update(text)

    def clear_data(self, why: str) -> None:
        self.examples = []
        self.data_path = ""
        self.show_data_status(why)

    def data_loaded(self, path: str, examples: list[Any]) -> None:
        self.data_path = path
        self.examples = examples
        self.row = -1
        self.show_data_status(f"{len(examples):,} rows from {Path(path).name}. "
                              "Ctrl+N loads the next row into the inputs.")

    def data_failed(self, message: str) -> None:
        self.examples = []
        self.show_data_status(message)

    def use_row(self, index: int) -> bool:
        """Put row `index` (0-based) into the variable boxes; False (and why, shown) if not."""
        from engine.strategies import example_values

        if not self.examples:
            self.show_data_status("Load a dataset first.")
            return False
        if not 0 <= index < len(self.examples):
            self.show_data_status(f"Row {index + 1} is out of range: the dataset has "
                                  f"{len(self.examples):,} rows.")
            return False
        self.row = index
        example = self.examples[index]
        values = example_values(example)
        self.set_values({name: values.get(name, "") for name in self.variables})
        self.query_one("#data-row", Input).value = str(index + 1)
        reference = getattr(example, "completion", "") or ""
        self.show_data_status(f"Row {index + 1} of {len(self.examples):,} "
                              f"(line {getattr(example, 'line', '?')}); "
                              f"reference: {reference[:120]}")
        return True

    def few_shot_pool(self) -> list[Any]:
        """The dataset minus the row being asked, so it is never its own example."""
        if 0 <= self.row < len(self.examples):
            return self.examples[: self.row] + self.examples[self.row + 1:]
        return self.examples

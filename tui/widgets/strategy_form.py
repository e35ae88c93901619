"""The Playground's Strategy tab: the strategy and its settings, the sampling parameters and the
strategies ticked for compare, read back as engine objects (`StrategyConfig`,
`GenerationParams`). A number that does not parse is a `TunedeckError` naming the field."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Select, SelectionList, Static

from engine.errors import TunedeckError
from engine.strategies import KINDS, SELECTIONS

DEFAULT_COMPARE = ("zero-shot", "few-shot", "cot")


def parse_stops(text: str) -> list[str]:
    """`\\n\\n|Question:` → ["\\n\\n", "Question:"]: `|` separates, `\\n` and `\\t` escape."""
    stops = []
    for part in text.split("|"):
        part = part.replace("\\n", "\n").replace("\\t", "\t")
        if part.strip("\n\t") or part:
            stops.append(part)
    return [s for s in stops if s]


def number(raw: str, name: str, kind: type, default: Any) -> Any:
    """`raw` as `kind` (int or float), `default` when empty; a TunedeckError naming `name`."""
    raw = raw.strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise TunedeckError(f"{name}: '{raw}' is not {noun}.") from None


def form_field(label: str, widget: Any, field_id: str) -> Horizontal:
    """One labelled line of a Playground form."""
    return Horizontal(Label(label, classes="pg-label"), widget, classes="pg-field",
                      id=f"field-{field_id}")


class StrategyForm(VerticalScroll):
    """Strategy, examples, CoT trigger, sampling parameters and the compare list."""

    def compose(self) -> ComposeResult:
        yield form_field("strategy", Select([(k, k) for k in KINDS], value="zero-shot",
                                            allow_blank=False, id="strategy-kind",
                                            compact=True), "kind")
        yield form_field("k examples", Input("3", id="strategy-k", compact=True), "k")
        yield form_field("selection", Select([(s, s) for s in SELECTIONS], value="first",
                                             allow_blank=False, id="strategy-selection",
                                             compact=True), "selection")
        yield form_field("samples", Input("5", id="strategy-samples", compact=True), "samples")
        yield form_field("CoT trigger", Input("Let's think step by step.",
                                              id="strategy-trigger", compact=True), "trigger")
        yield Static("Sampling", classes="pg-heading")
        yield form_field("temperature", Input("0", id="param-temperature", compact=True),
                         "temperature")
        yield form_field("top_p", Input("1.0", id="param-top-p", compact=True), "top-p")
        yield form_field("top_k", Input("0", id="param-top-k", compact=True), "top-k")
        yield form_field("max tokens", Input("256", id="param-max-new", compact=True),
                         "max-new")
        yield form_field("rep. penalty", Input("1.0", id="param-rep", compact=True), "rep")
        yield form_field("seed", Input("", placeholder="none", id="param-seed", compact=True),
                         "seed")
        yield form_field("stop", Input("", placeholder="a|b, \\n = newline", id="param-stop",
                                       compact=True), "stop")
        yield Static("Compare (Ctrl+T): 2–4 strategies", classes="pg-heading")
        yield SelectionList(*[(k, k, k in DEFAULT_COMPARE) for k in KINDS], id="compare-kinds")

    def _text(self, widget_id: str) -> str:
        return self.query_one(widget_id, Input).value

    def strategy(self, kind: str | None = None) -> Any:
        """The form's strategy (`kind` overrides the chosen one: compare runs each ticked)."""
        from engine.strategies import StrategyConfig

        return StrategyConfig(
            kind=kind or str(self.query_one("#strategy-kind", Select).value),
            k=number(self._text("#strategy-k"), "k examples", int, 3),
            selection=str(self.query_one("#strategy-selection", Select).value),
            samples=number(self._text("#strategy-samples"), "samples", int, 5),
            cot_trigger=self._text("#strategy-trigger") or "Let's think step by step.",
        )

    def params(self) -> Any:
        from engine.generation import GenerationParams

        value = self._text
        seed = value("#param-seed").strip()
        params = GenerationParams(
            temperature=number(value("#param-temperature"), "temperature", float, 0.0),
            top_p=number(value("#param-top-p"), "top_p", float, 1.0),
            top_k=number(value("#param-top-k"), "top_k", int, 0),
            max_new_tokens=number(value("#param-max-new"), "max tokens", int, 256),
            repetition_penalty=number(value("#param-rep"), "rep. penalty", float, 1.0),
            seed=number(seed, "seed", int, None) if seed else None,
            stop=parse_stops(value("#param-stop")),
        )
        params.validate()
        return params

    def compare_kinds(self) -> list[str]:
        chosen = self.query_one("#compare-kinds", SelectionList).selected
        return [k for k in KINDS if k in chosen]

    def set_settings(self, strategy: dict[str, Any], params: dict[str, Any]) -> None:
        """Put a recorded strategy and its parameters back into the form."""
        if strategy.get("kind") in KINDS:
            self.query_one("#strategy-kind", Select).value = strategy["kind"]
        if strategy.get("selection") in SELECTIONS:
            self.query_one("#strategy-selection", Select).value = strategy["selection"]
        fields = {"#strategy-k": strategy.get("k"), "#strategy-samples": strategy.get("samples"),
                  "#strategy-trigger": strategy.get("cot_trigger"),
                  "#param-temperature": params.get("temperature"),
                  "#param-top-p": params.get("top_p"), "#param-top-k": params.get("top_k"),
                  "#param-max-new": params.get("max_new_tokens"),
                  "#param-rep": params.get("repetition_penalty"),
                  "#param-seed": params.get("seed"),
                  "#param-stop": "|".join(s.replace("\n", "\\n").replace("\t", "\\t")
                                          for s in params.get("stop") or [])}
        for widget_id, value in fields.items():
            if value is not None:
                self.query_one(widget_id, Input).value = str(value)

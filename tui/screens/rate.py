"""Rate: a keyboard-only queue of completions to judge, and A/B comparisons.

The queue holds playground tries, training runs' samples, evaluation outputs and A/B pairs
(imported when the screen opens). n / p walk it; 1-5, + / -, a / b / t and e rate (see
`tui.widgets.rating_bar`); s cycles the source filter, u shows only unrated items. g asks the
active model for two answers to the current prompt (two temperatures, or base vs adapter when
an adapter is active), shown in random order with their origin hidden until you choose.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Static

from tui.screens.base import WorkbenchScreen
from tui.widgets.rating_bar import RATING_BINDINGS, RatingBar, RatingKeys

SOURCE_FILTERS = (None, "try", "sample", "eval", "ab", "manual")
SOURCE_NAMES = {None: "all", "try": "playground", "sample": "training samples",
                "eval": "evaluation", "ab": "A/B pairs", "manual": "manual"}


def _esc(text: str) -> str:
    return text.replace("[", r"\[")


def prompt_view(item: Any) -> str:
    """What the model was shown: the system text and the few-shot turns before the question,
    not only the question (the rating of a few-shot answer depends on its examples)."""
    completion = item.a if item.kind == "pair" else item
    messages = completion.messages or []
    if len(messages) <= 1:
        shown = completion.prompt_text or completion.prompt
        return shown if len(shown) > len(completion.prompt) else completion.prompt
    parts = []
    examples = 0
    for message in messages[:-1]:
        role = message.get("role", "")
        content = str(message.get("content", ""))
        if role == "system":
            parts.append(f"system: {content}")
        elif role == "user":
            examples += 1
            parts.append(f"example {examples} · user: {content}")
        else:
            parts.append(f"example {examples} · {role}: {content}")
    parts.append(f"question: {messages[-1].get('content', completion.prompt)}")
    return "\n".join(parts)


def provenance(c: Any) -> str:
    """Where a completion came from, in one line."""
    parts = [{"try": f"try #{c.try_id}", "sample": "training sample", "eval": "evaluation",
              "ab": "A/B", "manual": "manual"}.get(c.source, c.source)]
    if c.source == "sample" and c.extra.get("step") is not None:
        parts[0] += f" (run {c.run_id}, step {c.extra['step']})"
    parts += [p for p in (c.model, c.adapter and f"adapter {c.adapter}",
                          c.template and f"template {c.template}",
                          c.strategy.get("kind")) if p]
    if "temperature" in c.params:
        parts.append(f"temperature {c.params['temperature']:g}")
    return " · ".join(parts)


def variant(info: dict, side: str) -> str:
    v = info.get(side) or {}
    if "temperature" in v:
        return f"temperature {v['temperature']:g}"
    if "adapter" in v:
        return "base model" if v["adapter"] == "base" else "with adapter"
    return "?"


class RateScreen(RatingKeys, WorkbenchScreen):
    HELP_TITLE = "Rate"
    HELP = ("Judge completions from the keyboard. 1-5 stars, + / - thumbs, e edits the ideal "
            "answer (ctrl+s saves). For an A/B pair: a, b or t (tie); which setting made which "
            "answer is shown once you choose. n / p: next / previous; s: source filter; "
            "u: unrated only; g: generate an A/B pair for this prompt with the active model; "
            "i: import new tries and samples. Export with `tunedeck ratings export`.")
    BINDINGS = [
        *RATING_BINDINGS,
        Binding("n,j,right", "move(1)", "Next"),
        Binding("p,k,left", "move(-1)", "Prev", show=False),  # n/p in Help; the footer is full
        Binding("s", "cycle_source", "Source"),
        Binding("u", "toggle_unrated", "Unrated"),
        Binding("g", "generate_ab", "A/B"),
        Binding("i", "import_items", "Import"),
    ]
    DEFAULT_CSS = """
    RateScreen #rate-status { height: 1; padding: 0 1; background: $boost; }
    RateScreen #rate-body { height: 1fr; padding: 0 1; }
    RateScreen .label { color: $text-muted; text-style: bold; margin-top: 1; }
    RateScreen #rate-pair { height: auto; }
    RateScreen .side { width: 1fr; height: auto; border: round $panel-lighten-2; padding: 0 1; }
    RateScreen .side.winner { border: round $success; }
    RateScreen #rate-empty { color: $text-muted; margin-top: 1; }
    """

    def __init__(self, store: Any = None, import_on_open: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store = store
        self.import_on_open = import_on_open
        self.items: list[Any] = []
        self.index = 0
        self.source: str | None = None
        self.unrated_only = False
        self.busy = ""
        self.ab_max_new_tokens = 128

    @property
    def store(self) -> Any:
        if self._store is None:
            from engine.ratings import RatingStore

            self._store = RatingStore()
        return self._store

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="rate-status")
        with VerticalScroll(id="rate-body"):
            yield Static("", id="rate-empty")
            yield Static("Prompt", classes="label", id="prompt-label")
            yield Static("", id="rate-prompt")
            yield Static("Completion", classes="label", id="completion-label")
            yield Static("", id="rate-completion")
            with Horizontal(id="rate-pair"):
                with Vertical(classes="side", id="side-a"):
                    yield Static("", id="rate-a")
                with Vertical(classes="side", id="side-b"):
                    yield Static("", id="rate-b")
            yield Static("", classes="label", id="rate-provenance")
        yield RatingBar(self.store)
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        if self.import_on_open:
            self.action_import_items()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.reload(keep=True)

    # ------------------------------------------------------------------ the queue
    @property
    def current(self) -> Any:
        return self.items[self.index] if self.items else None

    def reload(self, keep: bool = False, select: tuple[str, int] | None = None) -> None:
        """Re-read the queue; keep the current item (or select one) where it is still listed."""
        current = self.current
        self.items = self.store.queue(self.source, unrated_only=self.unrated_only)
        want = select or ((current.kind, current.id) if keep and current is not None else None)
        self.index = 0
        if want is not None:
            for i, item in enumerate(self.items):
                if (item.kind, item.id) == want:
                    self.index = i
                    break
        self.show_current()

    def show_current(self) -> None:
        item = self.current
        self.query_one(RatingBar).show(item)
        self._render_item(item)
        self._render_status()

    def _render_status(self) -> None:
        rated, total = self.store.progress(self.source)
        parts = [f"{rated} / {total} rated", f"source: {SOURCE_NAMES[self.source]}"]
        if self.unrated_only:
            parts.append("unrated only")
        if self.items:
            parts.append(f"item {self.index + 1} of {len(self.items)}")
        if self.busy:
            parts.append(self.busy)
        self.query_one("#rate-status", Static).update("  ·  ".join(parts))

    def _render_item(self, item: Any) -> None:
        is_pair = item is not None and item.kind == "pair"
        single = item is not None and not is_pair
        for wid, shown in (("#rate-empty", item is None), ("#prompt-label", item is not None),
                           ("#rate-prompt", item is not None), ("#completion-label", single),
                           ("#rate-completion", single), ("#rate-pair", is_pair),
                           ("#rate-provenance", item is not None)):
            self.query_one(wid).display = shown
        if item is None:
            self.query_one("#rate-empty", Static).update(
                "Nothing to rate" + (" here" if self.source or self.unrated_only else " yet")
                + ". Try prompts in the Playground (F2), or train with samples (F4); "
                "they appear here. s / u change the filters.")
            return
        self.query_one("#rate-prompt", Static).update(_esc(prompt_view(item)))
        if single:
            self.query_one("#rate-completion", Static).update(_esc(item.completion))
            self.query_one("#rate-provenance", Static).update(_esc(provenance(item)))
            return
        self.query_one("#rate-a", Static).update(f"[b]A[/b]\n{_esc(item.a.completion)}")
        self.query_one("#rate-b", Static).update(f"[b]B[/b]\n{_esc(item.b.completion)}")
        self.query_one("#side-a").set_class(item.choice == "a", "winner")
        self.query_one("#side-b").set_class(item.choice == "b", "winner")
        # The origin of each side stays hidden until the choice is made (no anchoring).
        text = (f"A: {variant(item.info, 'a')}  ·  B: {variant(item.info, 'b')}" if item.rated
                else "which setting made which answer is hidden until you choose")
        self.query_one("#rate-provenance", Static).update(text)

    def on_rating_bar_rated(self, event: RatingBar.Rated) -> None:
        if self.items:
            self.items[self.index] = event.item
        self._render_item(event.item)
        self._render_status()

    # ------------------------------------------------------------------ keys
    def action_move(self, step: int) -> None:
        if self.items:
            self.index = max(0, min(len(self.items) - 1, self.index + step))
            self.show_current()

    def action_cycle_source(self) -> None:
        self.source = SOURCE_FILTERS[(SOURCE_FILTERS.index(self.source) + 1)
                                     % len(SOURCE_FILTERS)]
        self.reload(keep=True)

    def action_toggle_unrated(self) -> None:
        self.unrated_only = not self.unrated_only
        self.reload(keep=True)

    # ------------------------------------------------------------------ workers
    def _set_busy(self, text: str) -> None:
        self.busy = text
        self._render_status()

    def action_import_items(self) -> None:
        self._set_busy("importing…")
        self._import_worker()

    @work(thread=True, exclusive=True, exit_on_error=False, group="rate-import",
          description="Importing completions to rate")
    def _import_worker(self) -> None:
        from engine.training.rundir import list_runs

        try:
            self.store.import_tries()
            for run in list_runs():
                self.store.import_run_samples(run)
        finally:
            self.app.call_from_thread(self._imported)

    def _imported(self) -> None:
        self.busy = ""
        self.reload(keep=True)

    def action_generate_ab(self) -> None:
        item = self.current
        if item is None:
            self.notify("Nothing to generate from: the queue is empty.", severity="warning")
            return
        loaded = getattr(self.app, "loaded", None)
        if loaded is None:
            self.notify("The model is not loaded yet.", severity="warning")
            return
        source = item.a if item.kind == "pair" else item
        self._set_busy("generating an A/B pair…")
        self._generate_worker(loaded, source)

    @work(thread=True, exclusive=True, exit_on_error=False, group="rate-generate",
          description="Generating an A/B pair")
    def _generate_worker(self, loaded: Any, source: Any) -> None:
        from engine.adapter_base import describe_active
        from engine.ratings import generate_ab

        pair = None
        line = describe_active(loaded)  # which base the adapter side runs on, in one line
        if line:
            self.app.call_from_thread(self._set_busy, f"generating an A/B pair: {line}…")
        try:
            pair = generate_ab(self.store, loaded, source, max_new_tokens=self.ab_max_new_tokens)
        finally:
            self.app.call_from_thread(self._generated, pair)

    def _generated(self, pair: Any) -> None:
        self.busy = ""
        if pair is None:
            self._render_status()
            return
        if self.source not in (None, "ab"):
            self.source = None
        self.reload(select=("pair", pair.id))

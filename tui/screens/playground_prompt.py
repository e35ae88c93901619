"""The Playground's rendered prompt and token meter, as a mixin of the screen.

Typing is debounced (`REFRESH_DELAY`); the prompt is then rendered and counted in a worker, so
a slow template never holds the UI, and a newer render makes an older one's result stale. With
no model yet only the template text is shown; a template error points at its line.

The host screen provides ``current_template()``, ``strategy()``, ``params()``, ``_loaded()`` and
``_inputs`` (the `InputsPanel`).
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Static, TextArea
from textual.worker import get_current_worker

from engine.errors import TunedeckError
from tui.widgets.token_meter import TokenMeter

REFRESH_DELAY = 0.25  # seconds of quiet typing before the prompt is re-rendered and counted


def template_error_text(err: Any) -> str:
    where = []
    if getattr(err, "line", None):
        where.append(f"line {err.line}")
    if getattr(err, "column", None):
        where.append(f"column {err.column}")
    message = getattr(err, "message", None) or str(err)
    return f"{', '.join(where)}: {message}" if where else message



class PlaygroundPrompt(Screen):
    _refresh_timer: Timer | None = None
    _built: Any = None

    def _schedule_refresh(self, now: bool = False) -> None:
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        if now:
            self._refresh_timer = None
            self.call_after_refresh(self.refresh_prompt)
        else:
            self._refresh_timer = self.set_timer(REFRESH_DELAY, self.refresh_prompt)

    def refresh_prompt(self, ready: Any = None) -> None:
        """Re-render the prompt and count it, in a worker: a slow template never holds the UI.

        `ready`: the BuiltPrompt of the current template, values and strategy when the caller
        has just built it (a run), so it is shown at once without being built again.
        """
        from engine.templates import TemplateError

        self._refresh_timer = None
        self._built = None
        template = self.current_template()
        try:
            names = template.variables()
        except TemplateError as err:
            self.query_one("#template-error", Static).update(template_error_text(err))
            self.query_one("#meter", TokenMeter).clear("template error")
            return
        self.query_one("#template-error", Static).update("")
        self._inputs.sync_variables(names)
        values = self._inputs.values_for(names)
        loaded = self._loaded()
        if ready is not None:
            self._show_prompt(ready)
            return
        try:  # the form is read here, on the UI thread; the worker only renders
            build = None if loaded is None else self._builder(template, values, self.strategy(),
                                                              loaded)
        except TunedeckError as err:
            self._show_prompt(err)
            return
        self._render_worker(template, values, build)

    @work(thread=True, exclusive=True, exit_on_error=False, group="prompt",
          description="Rendering the prompt")
    def _render_worker(self, template: Any, values: dict, build: Any) -> None:
        from engine.templates import render_text

        try:
            result = build() if build is not None else render_text(template, values)
        except TunedeckError as err:
            result = err
        self.app.call_from_thread(self._show_prompt, result, get_current_worker())

    def _show_prompt(self, result: Any, worker: Any = None) -> None:
        """Show a BuiltPrompt, the rendered text (no model yet), or why there is neither."""
        from engine.templates import TemplateError

        if worker is not None and worker.is_cancelled:  # a newer render has been asked for
            return
        meter = self.query_one("#meter", TokenMeter)
        warnings = self.query_one("#prompt-warnings", Static)
        if isinstance(result, TemplateError):
            self.query_one("#template-error", Static).update(template_error_text(result))
            warnings.update(template_error_text(result))
            meter.clear("template error")
            return
        if isinstance(result, TunedeckError):
            warnings.update(str(result))
            meter.clear("cannot build the prompt")
            return
        view = self.query_one("#prompt-view", TextArea)
        if isinstance(result, str):
            view.load_text(result)
            warnings.update("")
            meter.clear("no model yet: tokens are counted once it is loaded")
            return
        self._built = result
        view.load_text(result.text)
        warnings.update("\n".join(result.warnings))
        note = f"{result.examples_used} examples" if result.examples_used else ""
        meter.set_budget(result.budget.used, result.budget.available, result.budget.window,
                         note)

    def _builder(self, template: Any, values: dict, strategy: Any, loaded: Any) -> Any:
        """Building the prompt as a call that any thread may make: the form is read now."""
        from engine.strategies import build_prompt

        examples = self._inputs.few_shot_pool() if strategy.uses_examples else ()
        max_new_tokens = self.params().max_new_tokens
        return lambda: build_prompt(template, values, loaded.tokenizer, strategy,
                                    examples=examples, max_new_tokens=max_new_tokens,
                                    context_window=loaded.info.context_window)


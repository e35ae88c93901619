"""The Playground screen, driven by real keys, and the history browser."""

from __future__ import annotations

from textual.widgets import Input, Select, SelectionList, TabbedContent, TextArea

from engine.store import HistoryStore
from tui.app import TunedeckApp
from tui.screens.history import SEARCH_DELAY, HistoryScreen
from tui.screens.playground import PlaygroundScreen
from tui.widgets.completion_view import CompletionUpdate, CompletionView
from tui.widgets.strategy_form import parse_stops
from tui.widgets.token_meter import TokenMeter


def use_model(app: TunedeckApp, loaded) -> None:
    """Hand the app an already loaded model, as its loader would (no reload per test)."""
    app.loaded = loaded
    app.model_info = loaded.info
    app.model_state = "ready"


async def open_playground(pilot, loaded=None) -> PlaygroundScreen:
    if loaded is not None:
        use_model(pilot.app, loaded)
    await pilot.press("f2")
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.3)
    screen = pilot.app.screen
    assert isinstance(screen, PlaygroundScreen)
    return screen


async def wait_for(pilot, condition, seconds: float = 120) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting")


def status(screen) -> str:
    return str(screen.query_one("#pg-status").content)


async def set_input(pilot, selector: str, value: str) -> None:
    widget = pilot.app.screen.query_one(selector, Input)
    widget.value = value
    await pilot.pause()


async def test_type_run_stream_then_cancel_a_second_run(default_model):
    messages: list = []
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
        screen = await open_playground(pilot, default_model)
        pane = screen.query_one("#out-0", CompletionView)

        box = screen.query_one("#var-prompt", TextArea)
        box.focus()
        await pilot.press(*"What is the capital of France?")
        await pilot.pause(0.5)
        meter = screen.query_one("#meter", TokenMeter)
        assert meter.used > 10 and meter.available == 8192 - 256

        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not screen._generating)
        await pilot.pause()
        assert "Paris" in pane.text
        updates = [m.text for m in messages if isinstance(m, CompletionUpdate)]
        assert len(updates) >= 2 and updates[-1] == pane.text  # streamed, not delivered once
        assert all(updates[-1].startswith(u) for u in updates)
        assert "eos" in pane.metrics and "tokens" in pane.metrics
        assert status(screen).startswith("Done")

        # A second, long run: cancelled with Esc while it streams.
        box.load_text("Write a very long story about a dragon who bakes bread.")
        await set_input(pilot, "#param-max-new", "400")
        box.focus()
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(pane.text) > 0)
        assert screen._generating
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen._generating)
        await pilot.pause()
        assert status(screen) == "Cancelled."
        assert "cancelled" in pane.metrics
        assert pane.text and "Paris" not in pane.text

    store = HistoryStore()
    tries = store.list_tries()
    store.close()
    assert [t.metrics["stop_reason"] for t in tries] == ["cancelled", "eos"]
    assert tries[0].metrics["completion_tokens"] < 400
    assert tries[1].inputs["prompt"] == "What is the capital of France?"
    assert "Paris" in tries[1].output


async def test_compare_runs_strategies_side_by_side(default_model):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_playground(pilot, default_model)
        screen.query_one("#template-select", Select).value = "arithmetic-cot"
        await pilot.pause()
        await app.workers.wait_for_complete()  # the template's sample dataset loads
        await pilot.pause(0.3)
        await pilot.press("ctrl+n")  # row 1 of the dataset into the inputs
        await pilot.pause(0.5)
        assert screen.query_one("#var-prompt", TextArea).text.strip()
        await set_input(pilot, "#param-max-new", "12")
        await set_input(pilot, "#strategy-k", "2")
        kinds = screen.query_one("#compare-kinds", SelectionList)
        kinds.deselect("cot")
        await pilot.pause()

        await pilot.press("ctrl+t")
        await pilot.pause()
        assert len(screen.query(CompletionView)) == 2
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not screen._generating, 300)
        await pilot.pause()
        panes = list(screen.query(CompletionView))
        assert [p.border_title for p in panes] == ["zero-shot", "few-shot"]
        assert all(p.text for p in panes)
        assert all("tokens" in p.metrics for p in panes)
        # The few-shot prompt carries two examples: it costs more prompt tokens.
        zero, few = (int(p.metrics.split(" · ")[2].split(" → ")[0].replace(",", ""))
                     for p in panes)
        assert few > zero

        await pilot.press("ctrl+t")
        await pilot.pause()
        assert len(screen.query(CompletionView)) == 1


async def test_template_error_shows_the_line_and_the_meter_follows(default_model):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot, default_model)
        await pilot.press("alt+1")
        await pilot.pause()
        assert screen.query_one("#pg-tabs", TabbedContent).active == "tab-template"
        editor = screen.query_one("#template-editor", TextArea)
        editor.load_text("Line one\n{{ prompt }\n")
        await pilot.pause(0.6)
        error = str(screen.query_one("#template-error").content)
        assert "line 2" in error
        assert screen.query_one("#meter", TokenMeter).available == 0

        editor.load_text("Question: {{ question }}\nContext: {{ context }}")
        await pilot.pause(0.6)
        assert str(screen.query_one("#template-error").content) == ""
        assert screen.query("#var-question") and screen.query("#var-context")
        await wait_for(pilot, lambda: not screen.query("#var-prompt"), 10)  # removal is async
        screen.query_one("#var-question", TextArea).load_text("Why is the sky blue?")
        await pilot.pause(0.6)
        assert "Question: Why is the sky blue?" in screen.query_one("#prompt-view",
                                                                     TextArea).text
        assert screen.query_one("#meter", TokenMeter).used > 0


async def test_a_run_builds_each_prompt_once_and_shows_the_one_it_runs(default_model,
                                                                          monkeypatch):
    from engine import strategies

    built: list[str] = []
    real = strategies.build_prompt

    def counting(template, values, tokenizer, strategy, **kwargs):
        built.append(strategy.kind)
        return real(template, values, tokenizer, strategy, **kwargs)

    monkeypatch.setattr(strategies, "build_prompt", counting)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_playground(pilot, default_model)
        view = screen.query_one("#prompt-view", TextArea)
        meter = screen.query_one("#meter", TokenMeter)
        await set_input(pilot, "#param-max-new", "4")
        screen.query_one("#var-prompt", TextArea).load_text("What is the capital of France?")
        await pilot.pause(0.6)
        shown, used = view.text, meter.used
        assert "capital of France" in shown and used > 0

        built.clear()
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: built)  # built in a worker: a slow template never blocks
        await pilot.pause(0.1)
        assert built == ["zero-shot"], "the prompt was built again after the run's own build"
        assert (view.text, meter.used) == (shown, used)
        await wait_for(pilot, lambda: not screen._generating)
        await pilot.pause(0.6)
        assert built == ["zero-shot"]
        assert screen.query_one("#out-0", CompletionView).text

        # Compare mode: one build per strategy; the Prompt tab keeps the chosen strategy's.
        await pilot.press("ctrl+t")
        screen.query_one("#compare-kinds", SelectionList).deselect("few-shot")
        await pilot.pause(0.6)
        built.clear()
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(built) == 2)
        await pilot.pause(0.1)
        assert built == ["zero-shot", "cot"]
        assert (view.text, meter.used) == (shown, used)
        await wait_for(pilot, lambda: not screen._generating)
        await pilot.pause(0.6)
        assert built == ["zero-shot", "cot"]


async def test_run_without_a_model_says_so():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert not screen._generating
        assert any("not ready" in n.message for n in app._notifications)


async def test_history_restores_a_try_into_the_playground():
    store = HistoryStore()
    store.add_try(model="m", adapter=None, template="instruction",
                  template_text="Say: {{ prompt }}",
                  strategy={"kind": "cot", "k": 2, "selection": "first",
                            "cot_trigger": "Think."},
                  params={"temperature": 0.5, "max_new_tokens": 40, "stop": ["\n\n"]},
                  inputs={"prompt": "hello there"}, prompt_text="Say: hello there",
                  output="hi!", metrics={"ttft_s": 0.1, "tokens_per_s": 10.0,
                                         "prompt_tokens": 5, "completion_tokens": 2,
                                         "stop_reason": "eos"})
    store.add_try(model="m", adapter=None, template="sentiment", template_text="x {{ prompt }}",
                  strategy={"kind": "zero-shot"}, params={}, inputs={"prompt": "great"},
                  prompt_text="x great", output="positive", metrics={})
    store.close()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        history = app.screen
        assert isinstance(history, HistoryScreen)
        assert history.query_one("#history-table").row_count == 2
        await pilot.press("slash", *"hello")
        await pilot.pause(SEARCH_DELAY + 0.25)  # the search runs once the typing pauses
        assert history.query_one("#history-table").row_count == 1
        await pilot.press("enter")  # search box → the table
        await pilot.press("enter")  # the highlighted try → the playground
        await pilot.pause(0.5)
        assert app.screen is screen
        assert screen.query_one("#template-editor", TextArea).text == "Say: {{ prompt }}"
        assert screen.query_one("#var-prompt", TextArea).text == "hello there"
        assert screen.query_one("#strategy-kind", Select).value == "cot"
        assert screen.query_one("#param-temperature", Input).value == "0.5"
        assert screen.query_one("#param-stop", Input).value == "\\n\\n"
        assert screen.query_one("#out-0", CompletionView).text == "hi!"


async def test_history_exports_jsonl(tunedeck_home):
    store = HistoryStore()
    store.add_try(model="m", adapter=None, template="t", template_text="{{ prompt }}",
                  strategy={}, params={}, inputs={"prompt": "p"}, prompt_text="p", output="o",
                  metrics={})
    store.close()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_playground(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, PlaygroundScreen)
    exported = list((tunedeck_home / "exports").glob("tries-*.jsonl"))
    assert len(exported) == 1 and '"output": "o"' in exported[0].read_text()


def test_parse_stops():
    assert parse_stops("") == []
    assert parse_stops("\\n\\n|Question:") == ["\n\n", "Question:"]


def test_snapshot_playground_80x24(snap_compare, default_model):
    async def ready(pilot) -> None:
        await open_playground(pilot, default_model)
        pilot.app.screen.query_one("#var-prompt", TextArea).load_text(
            "What is the capital of France?")
        await pilot.pause(0.6)

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24), run_before=ready)


def test_snapshot_playground_strategy_tab_compare(snap_compare, default_model):
    async def ready(pilot) -> None:
        await open_playground(pilot, default_model)
        await pilot.press("alt+3", "ctrl+t")
        await pilot.pause(0.6)

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(100, 30), run_before=ready)

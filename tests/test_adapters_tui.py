"""Adapters where prompts are run: `tunedeck prompt --adapter` and the Playground (Ctrl+F picks an
adapter, Ctrl+B runs base and adapter side by side)."""

from __future__ import annotations

import pytest
from adapter_runs import make_run
from textual.widgets import Input, OptionList, TextArea

from cli.main import main
from engine import models
from engine.adapters import AdapterSet
from engine.store import HistoryStore
from tui.app import TunedeckApp
from tui.widgets.completion_view import CompletionView

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def _tries_adapters() -> list[str | None]:
    with HistoryStore() as store:
        return [t.adapter for t in store.list_tries()]


def test_prompt_cli_with_an_adapter(tiny_model_dir, capsys):
    run = make_run(tiny_model_dir, name="cli-prompt")
    args = ["prompt", "--input", "Hello there", "--max-new-tokens", "8"]
    assert main([*args, "--model", str(tiny_model_dir)]) == 0
    base = capsys.readouterr().out
    assert main([*args, "--model", str(tiny_model_dir), "--adapter", run.id]) == 0
    tuned = capsys.readouterr().out
    assert tuned != base
    # Without --model, the adapter's own base model is loaded.
    assert main([*args, "--adapter", run.id]) == 0
    assert capsys.readouterr().out == tuned
    assert _tries_adapters() == [run.id, run.id, None]
    assert main([*args, "--adapter", f"{run.id}:checkpoint-9"]) == 1
    assert "no such checkpoint" in capsys.readouterr().err


async def _wait(pilot, condition, seconds: float = 120) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting")


async def _run(pilot, screen) -> None:
    await pilot.press("ctrl+r")
    await pilot.pause()
    await _wait(pilot, lambda: not screen._generating)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def test_playground_picks_an_adapter_and_compares_it_with_the_base(tiny_model_dir):
    run = make_run(tiny_model_dir, name="playground")
    loaded = models.load(str(tiny_model_dir))
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(120, 36)) as pilot:
        app.loaded, app.model_info, app.model_state = loaded, loaded.info, "ready"
        await pilot.press("f2")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        screen = app.screen
        screen.query_one("#param-max-new", Input).value = "8"
        screen.query_one("#var-prompt", TextArea).load_text("Hello there")
        await pilot.pause(0.5)
        await _run(pilot, screen)
        base_text = screen.query_one("#out-0", CompletionView).text

        # Ctrl+F: the picker lists the run's adapter; choosing it attaches it in a worker.
        await pilot.press("ctrl+f")
        await app.workers.wait_for_complete()
        await pilot.pause()
        options = app.screen.query_one("#adapters", OptionList)
        assert options.get_option_at_index(1).id == run.id
        await pilot.press("down", "enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen is screen
        adapters = AdapterSet.of(loaded)
        assert adapters.active_info is not None and adapters.active_info.ref == run.id
        assert "Using " in str(screen.query_one("#pg-status").content)
        await _run(pilot, screen)
        tuned_text = screen.query_one("#out-0", CompletionView).text
        assert tuned_text != base_text

        # Ctrl+B: base and adapter side by side, same input, same numbers as alone.
        await pilot.press("ctrl+b")
        await pilot.pause()
        await _run(pilot, screen)
        panes = list(screen.query(CompletionView))
        assert [p.text for p in panes] == [base_text, tuned_text]
        assert "base" in panes[0].border_title and run.id in panes[1].border_title
        assert adapters.active_info.ref == run.id  # the compare left the adapter active

        # Back to single mode and to the base model.
        await pilot.press("ctrl+b")
        await pilot.press("ctrl+f")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("enter")  # the first row: the base model
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert adapters.active is None
        await _run(pilot, screen)
        assert screen.query_one("#out-0", CompletionView).text == base_text

    assert _tries_adapters() == [None, run.id, None, run.id, None]

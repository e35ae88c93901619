"""The Playground renders in a worker: a template that runs too long never freezes the screen."""

from __future__ import annotations

import threading

from textual.widgets import TabbedContent, TextArea

from engine import sandbox, templates
from tui.app import TunedeckApp
from tui.screens.playground import PlaygroundScreen

SLOW = "Hi\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


async def wait_until(pilot, condition, seconds: float = 60) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await pilot.pause(0.02)
    return condition()


async def test_a_slow_template_renders_in_a_worker_and_fails_with_its_line(monkeypatch):
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.5)
    started, release = threading.Event(), threading.Event()
    real_render = templates.render_text

    def held_render(template, values):
        # Holds the render until the test has pressed keys: the screen must answer meanwhile.
        started.set()
        release.wait(60)
        return real_render(template, values)

    monkeypatch.setattr(templates, "render_text", held_render)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PlaygroundScreen)
        tabs = screen.query_one("#pg-tabs", TabbedContent)
        await pilot.press("alt+1")
        await pilot.pause()
        assert tabs.active == "tab-template"
        started.clear()
        screen.query_one("#template-editor", TextArea).load_text(SLOW)
        assert await wait_until(pilot, started.is_set)
        # The render is under way in its thread; keys still switch tabs.
        await pilot.press("alt+3")
        await pilot.pause()
        assert tabs.active == "tab-strategy"
        await pilot.press("alt+1")
        await pilot.pause()
        assert tabs.active == "tab-template"
        release.set()
        error = screen.query_one("#template-error")
        assert await wait_until(pilot, lambda: "runs too long" in str(error.content))
        assert "line 2" in str(error.content)

        # A good template afterwards renders as before.
        screen.query_one("#template-editor", TextArea).load_text("Q: {{ 'x' * 3 }}")
        view = screen.query_one("#prompt-view", TextArea)
        assert await wait_until(pilot, lambda: view.text.strip() == "Q: xxx")
        assert str(error.content) == ""


async def test_ctrl_r_builds_the_prompt_in_a_worker_and_the_screen_answers_meanwhile(
        default_model, monkeypatch):
    """Ctrl+R renders each strategy's prompt off the UI thread: while a build is held, keys
    still switch tabs and a second Ctrl+R is refused; once it is done the run streams."""
    from engine import strategies
    from tui.widgets.completion_view import CompletionView

    started, release = threading.Event(), threading.Event()
    real = strategies.build_prompt

    def held(*args, **kwargs):
        started.set()
        release.wait(60)
        return real(*args, **kwargs)

    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        app.loaded, app.model_info, app.model_state = default_model, default_model.info, "ready"
        await pilot.press("f2")
        await pilot.pause()
        await app.workers.wait_for_complete()
        screen = app.screen
        assert isinstance(screen, PlaygroundScreen)
        screen.query_one("#param-max-new").value = "3"
        screen.query_one("#var-prompt", TextArea).load_text("What is the capital of France?")
        await pilot.pause(0.6)
        await app.workers.wait_for_complete()
        monkeypatch.setattr(strategies, "build_prompt", held)
        await pilot.press("ctrl+r")
        assert await wait_until(pilot, started.is_set)
        assert "Building the prompt" in str(screen.query_one("#pg-status").content)
        tabs = screen.query_one("#pg-tabs", TabbedContent)
        await pilot.press("alt+3")
        await pilot.pause()
        assert tabs.active == "tab-strategy"
        await pilot.press("ctrl+r")  # one run at a time, building included
        await pilot.pause()
        assert any("Already generating" in str(n.message) for n in app._notifications)
        release.set()
        assert await wait_until(pilot, lambda: not screen._generating
                                and bool(screen.query_one("#out-0", CompletionView).text))

"""What a new user met at 80×24 over SSH (findings/new-user-walk.md), driven by real keys."""

from __future__ import annotations

import json
from types import SimpleNamespace

from textual.geometry import Region
from textual.widgets import DataTable, Input, Select, TabbedContent, Tabs
from textual.widgets._footer import FooterKey

from engine.strategies import StrategyConfig
from tui.app import TunedeckApp
from tui.screens.help import HelpScreen
from tui.screens.playground import PlaygroundScreen, RunJob
from tui.screens.registry import SCREENS
from tui.widgets.completion_view import CompletionView


def rendered_text(widget) -> str:
    """The text a widget draws on screen now, line by line."""
    width, height = widget.size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


async def open_playground(pilot) -> PlaygroundScreen:
    await pilot.press("f2")
    await pilot.pause(0.3)
    assert isinstance(pilot.app.screen, PlaygroundScreen)
    return pilot.app.screen


def footer_keys(screen) -> dict[str, FooterKey]:
    return {key.description: key for key in screen.query(FooterKey)}


def visible_in_footer(key: FooterKey, width: int) -> bool:
    palette = key.screen.query(".-command-palette")
    right = palette.first().region.x if palette else width
    return key.region.width > 0 and key.region.right <= right


# -- 4: tabs keys that survive terminals, and visible focus --------------------------------------
async def test_ctrl_g_cycles_the_playground_tabs_and_focus_shows():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        tabs = screen.query_one("#pg-tabs", TabbedContent)
        assert tabs.active == "tab-inputs"
        seen = []
        for _ in range(4):
            await pilot.press("ctrl+g")
            await pilot.pause()
            seen.append(tabs.active)
        assert seen == ["tab-strategy", "tab-prompt", "tab-template", "tab-inputs"]
        assert isinstance(app.focused, Tabs)
        await pilot.press("right")  # the focused tab bar moves with the arrows too
        await pilot.pause()
        assert tabs.active == "tab-strategy"

        # A compact input shows it has the focus (Textual's own 5% tint does not show).
        field = screen.query_one("#param-temperature", Input)
        assert field.styles.background_tint.a == 0
        field.focus()
        await pilot.pause()
        assert field.styles.background_tint.a >= 0.25


# -- 5: pane labels, compare mode, compare at 80 columns -------------------------------------
async def test_compare_starts_from_empty_panes_and_takes_the_width_at_80_columns():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        pane = screen.query_one("#out-0", CompletionView)
        pane.start("output · cot")
        pane.set_text("Step 1 … so the answer is 42")
        pane.set_answer("answer: 42")
        pane.finish("done")
        await pilot.press("ctrl+t")
        await pilot.pause()
        panes = list(screen.query(CompletionView))
        assert [p.border_title for p in panes] == ["zero-shot", "few-shot", "cot"]
        assert all(p.text == "" and not p.query_one(".completion-answer").display
                   for p in panes)
        assert screen.has_class("wide")  # the prompt column gives the panes its room
        assert all(p.size.width >= 38 for p in panes), [p.size.width for p in panes]
        assert "Wide" in footer_keys(screen)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not screen.has_class("wide")
        assert screen.query_one("#pg-left").size.width > 0

    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await open_playground(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not screen.has_class("wide")  # wide enough for both columns


async def test_base_vs_adapter_panes_name_the_model_first():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        strategy = StrategyConfig(kind="zero-shot")
        base = RunJob(0, "zero-shot · base", strategy, None, generator=SimpleNamespace(
            label="base"))
        tuned = RunJob(1, "zero-shot · sql-1 (final)", strategy, None,
                       generator=SimpleNamespace(label="sql-1 (final)"))
        assert screen._pane_title(base) == "base · zero-shot"
        assert screen._pane_title(tuned) == "sql-1 (final) · zero-shot"
        plain = RunJob(0, "zero-shot", strategy, None)
        assert screen._pane_title(plain) == "output · zero-shot"


# -- 6: the title follows the model ----------------------------------------------------------
async def test_loading_another_model_drops_the_adapter_from_the_title(tiny_model_dir):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        # As after Ctrl+F chose an adapter and Ctrl+B compared it with the base.
        screen.sub_title = "adapter: sql-1 (final)"
        screen.adapter_compare = True
        screen._ensure_panes(2)
        await pilot.press("f8", "f2")  # the user goes to Models…
        app.load_model(str(tiny_model_dir))  # …and picks another model there
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        assert app.model_state == "ready"
        assert screen.sub_title == ""
        assert not screen.adapter_compare
        assert len(screen.query(CompletionView)) == 1


# -- 14: settings survive a restart ----------------------------------------------------------
async def test_playground_settings_survive_a_restart(tunedeck_home):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await pilot.press("ctrl+g")  # the Strategy tab
        screen.query_one("#strategy-kind", Select).value = "few-shot"
        screen.query_one("#strategy-k", Input).value = "5"
        screen.query_one("#param-temperature", Input).value = "0.7"
        screen.query_one("#param-stop", Input).value = "\\n\\n|Question:"
        await pilot.pause()
        await pilot.press("ctrl+q")
    saved = json.loads((tunedeck_home / "playground.json").read_text())
    assert saved["params"]["temperature"] == "0.7" and saved["tab"] == "tab-strategy"

    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        assert screen.query_one("#strategy-kind", Select).value == "few-shot"
        assert screen.query_one("#strategy-k", Input).value == "5"
        assert screen.query_one("#param-temperature", Input).value == "0.7"
        assert screen.params().stop == ["\n\n", "Question:"]
        assert screen.query_one("#pg-tabs", TabbedContent).active == "tab-strategy"


async def test_a_broken_settings_file_is_reported_and_the_defaults_used(tunedeck_home):
    (tunedeck_home / "playground.json").write_text("{not json")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        notes = [n.message for n in app._notifications]
        assert any("playground.json, line 1: not valid JSON" in n for n in notes), notes
        assert screen.query_one("#param-temperature", Input).value == "0"


# -- 9: help and footer ----------------------------------------------------------------------
async def test_help_lists_the_screens_own_keys_first_in_one_scroll_area():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_playground(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        table = help_screen.query_one(DataTable)
        assert app.focused is table  # the arrows scroll it at once, no Tab into an inner list
        scrollers = [w for w in help_screen.query("*") if w.is_scrollable and w.allow_vertical_scroll]
        assert scrollers == [table]
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        keys = [str(r[0]) for r in rows]
        assert keys[:4] == ["Ctrl+R", "Esc", "Ctrl+T", "Ctrl+G"]
        assert {"Ctrl+F", "Ctrl+B", "Ctrl+L"} <= set(keys)
        text = " ".join(" ".join(map(str, r)) for r in rows)
        for generic in ("super+c", "Copy selected text", "Cursor left", "Focus Next"):
            assert generic not in text
        assert text.count("stars") == 1  # "1-5 stars", not one row per digit
        assert "Quit" in text
        await pilot.press("escape")


async def test_footers_at_80_columns_show_each_screens_own_keys():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        home = footer_keys(app.screen)
        for name in ("Model", *(entry.title for entry in SCREENS[1:])):
            assert visible_in_footer(home[name], 80), name  # F2-F8 whole at 80 columns
        screen = await open_playground(pilot)
        keys = footer_keys(screen)
        assert "Playground" not in keys and "Home" not in keys  # Home lists the screens
        for name in ("Run", "Compare", "Tab", "Adapter", "vs base"):
            assert visible_in_footer(keys[name], 80), name
        # The Rate screen has the most keys: each whole, Help and Quit included.
        await pilot.press("f6")
        await pilot.pause(0.3)
        keys = footer_keys(app.screen)
        for name in ("Ideal", "Next", "Source", "Unrated", "A/B", "Import", "Help", "Quit"):
            assert visible_in_footer(keys[name], 80), name
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(120, 30)) as pilot:
        for name in ("Playground", "Train", "Runs", "Rate", "Evaluate", "Models"):
            assert visible_in_footer(footer_keys(app.screen)[name], 120), name


async def test_home_never_cuts_what_for_mid_word():
    for size in ((80, 24), (60, 20)):
        app = TunedeckApp(load_model=False)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            words = rendered_text(app.screen.query_one("#screens-table")).split()
            for entry in SCREENS:
                for word in entry.description.split():
                    assert word in words, (size, word)


# -- 12: the model chooser ------------------------------------------------------------------
async def test_model_chooser_enter_takes_the_first_entry_at_once():
    app = TunedeckApp(load_model=False)
    chosen: list[str] = []
    app.load_model = chosen.append
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("m")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert chosen == ["smollm2-135m-instruct"]


# -- 14: what Rate shows of a prompt; the loss chart's legend --------------------------------
async def test_rate_shows_the_system_text_and_the_few_shot_examples():
    from engine.ratings import RatingStore

    messages = [{"role": "system", "content": "Answer with one SQL query."},
                {"role": "user", "content": "How many stores?"},
                {"role": "assistant", "content": "SELECT COUNT(*) FROM stores"},
                {"role": "user", "content": "How many customers?"}]
    with RatingStore() as store:
        store.add_completion(source="try", prompt="How many customers?", messages=messages,
                             completion="SELECT COUNT(*) FROM customers")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f6")
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = str(app.screen.query_one("#rate-prompt").render())
        assert shown.splitlines() == [
            "system: Answer with one SQL query.",
            "example 1 · user: How many stores?",
            "example 1 · assistant: SELECT COUNT(*) FROM stores",
            "question: How many customers?"]


async def test_loss_chart_legend_sits_above_the_plot_and_marks_differ():
    from textual.app import App

    from tui.widgets.loss_chart import LossChart, Series

    class ChartApp(App):
        def compose(self):
            yield LossChart(id="chart")

    steps = list(range(1, 21))
    app = ChartApp()
    async with app.run_test(size=(80, 20)) as pilot:
        chart = app.query_one(LossChart)
        chart.show_run(Series(steps=steps, losses=[2 - s / 20 for s in steps],
                              eval_steps=[10, 20], eval_losses=[1.6, 1.2],
                              lr_steps=steps, lrs=[1e-4] * 20))
        await pilot.pause()
        assert len({c.marker for c in chart.curves}) == 3  # told apart without colour
        lines = chart.plt.build().splitlines()
        assert "⣀ train (smoothed)" in lines[0] and "• eval" in lines[0]
        assert "· lr (right axis)" in lines[0]
        assert not any("train" in line or "eval" in line for line in lines[1:])


# -- 7: no verdict without evidence ----------------------------------------------------------
def _paired(name: str, statuses: list[str], tokens: float, adapter: bool = False):
    from engine.evaluation.metrics import ColumnMetrics
    from engine.evaluation.spec import Column, ColumnResult

    rows = [{"key": f"k{i}", "status": s} for i, s in enumerate(statuses)]
    accuracy = statuses.count("correct") / len(statuses)
    return ColumnResult(Column(name, "zero-shot", adapter=adapter),
                        ColumnMetrics(n=len(statuses), accuracy=accuracy, prompt_tokens=tokens),
                        rows)


def _verdict(*columns) -> str:
    from engine.evaluation.matrix import MatrixResult, recommend
    from engine.evaluation.spec import EvalSpec

    n = columns[0].metrics.n
    return recommend(MatrixResult(spec=EvalSpec(), task="sql", source="x", model="m",
                                  adapter="a", columns=list(columns), examples=n))


def test_the_verdict_needs_enough_examples_and_a_real_difference():
    zero = ["wrong"] * 3
    assert "Not enough evidence: n=3" in _verdict(_paired("zero-shot", zero, 150),
                                                   _paired("adapter", zero, 140, adapter=True))
    all_wrong = ["wrong"] * 20
    text = _verdict(_paired("zero-shot", all_wrong, 150),
                    _paired("adapter", all_wrong, 140, adapter=True))
    assert "No recommendation: neither column answered" in text
    assert "use the fine-tuned adapter" not in text
    # 12 of 20 vs 10 of 20, disagreeing on 4 examples (3 to 1): noise, McNemar p = 0.62.
    base = ["correct"] * 9 + ["wrong"] * 10 + ["correct"]
    tuned = ["correct"] * 9 + ["correct", "correct", "correct"] + ["wrong"] * 7 + ["wrong"]
    text = _verdict(_paired("zero-shot", base, 150), _paired("adapter", tuned, 300, adapter=True))
    assert "No recommendation: the difference is within noise (p = 0.62, McNemar on 20" in text
    # 16 of 20 vs 6 of 20, the adapter right on every example the base got wrong: real.
    tuned = ["correct"] * 16 + ["wrong"] * 4
    base = ["correct"] * 6 + ["wrong"] * 14
    text = _verdict(_paired("zero-shot", base, 150), _paired("adapter", tuned, 140, adapter=True))
    assert "Recommendation: use the fine-tuned adapter (p = 0.002" in text

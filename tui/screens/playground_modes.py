"""The Playground's layout modes and what it keeps across restarts, as a mixin of the screen.

- Tabs: Ctrl+G goes to the next tab (a plain control byte, so it survives every terminal and
  tmux, where Alt+1…4 often arrives as ESC 1 or a character such as "¡").
- Wide: Ctrl+L hides the prompt column; compare below `WIDE_BELOW` columns does it by itself,
  so side-by-side panes are not 18 columns wide at 80.
- The title names the adapter that is active on the model now (none after another model is
  loaded), and base-vs-adapter mode ends when there is no adapter left to compare.
- Settings (template, strategy, sampling, dataset, compare strategies, tab) are saved on leaving
  the screen, on a run and on Ctrl+Q, and put back on the next start.

The host screen provides ``_adapters(loaded)``, ``_loaded()``, ``adapter_compare`` and
``_ensure_panes(n)`` (the Playground, with `AdapterControls`).
"""

from __future__ import annotations

from textual import on
from textual.events import ScreenSuspend
from textual.screen import Screen
from textual.widgets import TabbedContent, TabPane, Tabs

WIDE_BELOW = 120  # columns: below this, compare panes take the prompt column's room


class PlaygroundModes(Screen):
    def _restore_settings(self) -> None:
        from tui.screens import playground_settings

        saved, problem = playground_settings.load()
        if problem:
            self.notify(problem, title="Playground settings", severity="warning", timeout=10)
        if saved:
            playground_settings.apply(self, saved)

    @on(ScreenSuspend)
    def save_settings(self) -> None:
        """Keep the settings for the next start: on leaving the screen, on a run, and on Ctrl+Q
        (the App asks before it exits: at unmount the widgets are already gone)."""
        from tui.screens import playground_settings

        try:
            playground_settings.save(playground_settings.collect(self))
        except OSError as err:
            self.notify(f"tunedeck: {playground_settings.settings_path()}: {err.strerror}; the "
                        "Playground settings are not kept.", severity="warning")

    def _sync_adapter_title(self) -> None:
        """The title names the adapter active on the model now: after another model is loaded
        (F8, m) none is, and base-vs-adapter mode has nothing left to compare."""
        adapters = self._adapters(self._loaded())
        info = adapters.active_info if adapters is not None else None
        self.sub_title = f"adapter: {info.label}" if info is not None else ""
        if info is None and self.adapter_compare:
            self.adapter_compare = False
            self._ensure_panes(1)[0].set_title("output")

    def action_toggle_wide(self) -> None:
        self._wide_by_compare = False
        self.toggle_class("wide")

    def _auto_wide(self, compare: bool) -> None:
        """Side-by-side panes need the whole width below 120 columns (at 80 the prompt column
        would leave each pane 18 columns): compare hides the prompt column, Ctrl+L brings it
        back, and leaving compare restores what the user had."""
        if compare and not self.has_class("wide") and self.size.width < WIDE_BELOW:
            self._wide_by_compare = True
            self.add_class("wide")
            self.notify("The prompt column is hidden to give the panes room: Ctrl+L shows it.",
                        timeout=4)
        elif not compare and getattr(self, "_wide_by_compare", False):
            self._wide_by_compare = False
            self.remove_class("wide")

    def action_next_tab(self) -> None:
        tabs = self.query_one("#pg-tabs", TabbedContent)
        order = [pane.id for pane in tabs.query(TabPane)]
        if self.has_class("wide"):
            self.action_toggle_wide()  # the tabs are in the hidden column: show it
        tabs.active = order[(order.index(tabs.active) + 1) % len(order)]
        tabs.query_one(Tabs).focus()

    def action_tab(self, tab: str) -> None:
        self.query_one("#pg-tabs", TabbedContent).active = tab

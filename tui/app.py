"""The tunedeck App: screens, global keys, the command palette and the active model.

Kept thin on purpose: each screen owns its widgets and workers; the App only switches screens and
holds the one shared resource, the loaded model (loaded in a thread worker, never at import).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from tui.messages import ModelLoaded, ModelStateChanged
from tui.screens.registry import SCREENS


class TunedeckApp(App):
    TITLE = "tunedeck"
    SUB_TITLE = "adapt a local LLM from the keyboard"
    CSS_PATH = Path(__file__).with_name("app.tcss")
    MODES = {entry.name: entry.factory for entry in SCREENS}
    DEFAULT_MODE = "home"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        # Out of the footer: Home lists them, and `?` on every screen; the footer is for the
        # keys of the screen in front (at 80 columns there is room for little else).
        *[
            Binding(entry.key, f"switch_mode('{entry.name}')", entry.title, show=False)
            for entry in SCREENS
        ],
    ]

    model_state: reactive[str] = reactive("idle")
    model_detail: reactive[str] = reactive("")

    def __init__(self, model: str | None = None, load_model: bool = True) -> None:
        super().__init__()
        from engine.models import DEFAULT_MODEL

        self.model_ref = model or DEFAULT_MODEL
        self.loaded: Any = None  # engine.models.LoadedModel once ready
        self.model_info: Any = None
        self._autoload = load_model

    def on_mount(self) -> None:
        if self._autoload:
            # After the first frame: the model's imports (torch, transformers) must not delay it.
            self.call_after_refresh(self.load_model, self.model_ref)

    # ------------------------------------------------------------------ the active model
    def load_model(self, ref: str) -> None:
        self.model_ref = ref
        self.loaded = None
        self.model_info = None
        self.model_detail = f"Loading {ref}…"
        self.model_state = "loading"
        self._post_model_state("loading", self.model_detail)
        self._load_model_worker(ref)

    def adopt_model(self, loaded: Any, ref: str) -> None:
        """Make a model a screen has loaded the active one: an adapter's own base (its 4-bit
        base for QLoRA), loaded where the adapter was chosen (engine.adapter_base)."""
        self.model_ref = ref
        self.loaded = loaded
        self.model_info = loaded.info
        self.model_detail = ""
        self.model_state = "ready"
        self._post_model_state("ready", "", loaded.info)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model",
          description="Loading the model")
    def _load_model_worker(self, ref: str) -> None:
        from engine import models
        from tui.screens.base import describe_error

        def progress(text: str) -> None:
            self.call_from_thread(setattr, self, "model_detail", text)

        try:
            loaded = models.load(ref, progress=progress)
        except Exception as err:  # shown as the model's state, on every screen
            self.post_message(ModelLoaded(ref, error=describe_error(err)))
            return
        self.post_message(ModelLoaded(ref, loaded))

    def on_model_loaded(self, event: ModelLoaded) -> None:
        if event.ref != self.model_ref:  # overtaken by a later choice of model
            return
        if event.error:
            self.model_detail = event.error
            self.model_state = "error"
            self._post_model_state("error", self.model_detail)
            return
        self.loaded = event.loaded
        self.model_info = self.loaded.info
        self.model_detail = ""
        self.model_state = "ready"
        self._post_model_state("ready", "", self.model_info)

    def _post_model_state(self, state: str, detail: str, info: Any = None) -> None:
        for screen in self._installed_and_stacked_screens():
            screen.post_message(ModelStateChanged(state, detail, info))

    def _installed_and_stacked_screens(self) -> list[Screen]:
        seen: list[Screen] = []
        for stack in self._screen_stacks.values():
            for screen in stack:
                if screen not in seen:
                    seen.append(screen)
        return seen

    # ------------------------------------------------------------------ help and palette
    def action_help(self) -> None:
        from tui.screens.help import HelpScreen, help_rows

        if isinstance(self.screen, HelpScreen):
            return
        title = getattr(self.screen, "HELP_TITLE", None) or type(self.screen).__name__
        intro = getattr(self.screen, "HELP", "")
        self.push_screen(HelpScreen(title, help_rows(self), intro))

    async def action_quit(self) -> None:
        # Screens keep what they would lose (the Playground its settings) while their widgets
        # still exist: by unmount time they are gone.
        for screen in self._installed_and_stacked_screens():
            keep = getattr(screen, "save_settings", None)
            if callable(keep) and screen.is_mounted:
                keep()
        await super().action_quit()

    def get_system_commands(self, screen: Screen):
        yield from super().get_system_commands(screen)
        for entry in SCREENS:
            yield SystemCommand(f"Go to {entry.title}", entry.description,
                                partial(self.switch_mode, entry.name))
        yield SystemCommand("Choose model", "switch the active model", self.action_choose_model)
        yield SystemCommand("Help", "every key binding", self.action_help)
        yield SystemCommand("Export a run", "GGUF + Ollama Modelfile, a merged Hugging Face folder, "
                            "or the adapter alone", partial(self._export_run, screen))

    def _export_run(self, screen: Screen) -> None:
        from tui.screens.runs_export import open_export

        open_export(screen)

    def action_choose_model(self) -> None:
        from tui.screens.model_picker import ModelPicker

        def chosen(ref: str | None) -> None:
            if ref:
                self.load_model(ref)

        self.push_screen(ModelPicker(self.model_ref), chosen)


def run_app(model: str | None = None) -> int:
    TunedeckApp(model=model).run()
    return 0

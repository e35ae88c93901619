"""The shape both pickers share: choose a listed reference or type one; Esc cancels."""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList


class ReferencePicker(ModalScreen[str | None]):
    """Dismisses with the chosen option's id, the typed text, or None. Subclasses compose one
    OptionList (option ids are the references) and one Input."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    @on(Input.Submitted)
    def _typed(self, event: Input.Submitted) -> None:
        ref = event.value.strip()
        if ref:
            self.dismiss(ref)

    def action_cancel(self) -> None:
        self.dismiss(None)

"""The top-level screens, in the order of their keys.

Each entry is imported only when the user first opens it, so the TUI's first frame pulls in only
the Home screen. To add a screen: create ``tui/screens/<name>.py`` with the Screen class and add
one ``ScreenEntry`` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScreenEntry:
    name: str  # mode name, also used in the command palette
    key: str  # global key that switches to it
    title: str
    module: str
    cls: str
    description: str

    def factory(self) -> Any:
        return getattr(importlib.import_module(self.module), self.cls)()


SCREENS: list[ScreenEntry] = [
    ScreenEntry("home", "f1", "Home", "tui.screens.home", "HomeScreen",
                "the active model and where to go next"),
    # -- screens --
]

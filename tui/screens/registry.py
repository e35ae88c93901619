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
    ScreenEntry("playground", "f2", "Playground", "tui.screens.playground", "PlaygroundScreen",
                "templates, strategies, live generation; compare side by side; history"),
    ScreenEntry("data", "f3", "Data", "tui.screens.data", "DataScreen",
                "open a dataset: problems by line, rows, token lengths, labels"),
    ScreenEntry("train", "f4", "Train", "tui.screens.train", "TrainScreen",
                "configure, check and launch a fine-tune"),
    ScreenEntry("runs", "f5", "Runs", "tui.screens.runs", "RunsScreen",
                "every run: live loss, samples, stop / resume"),
    ScreenEntry("rate", "f6", "Rate", "tui.screens.rate", "RateScreen",
                "judge completions and A/B pairs; export SFT / DPO / KTO data"),
    ScreenEntry("evaluate", "f7", "Evaluate", "tui.screens.evaluate", "EvaluateScreen",
                "prompting vs fine-tuning on held-out data: the matrix"),
    ScreenEntry("models", "f8", "Models", "tui.screens.models", "ModelsScreen",
                "models on this machine, exported ones too: choose the active one"),
]

"""Messages shared between screens and widgets (attributes down, messages up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class ModelStateChanged(Message):
    """The active model started loading, finished loading or failed."""

    state: str  # "loading" | "ready" | "error"
    detail: str = ""
    info: Any = None  # engine.models.ModelInfo when ready


@dataclass
class LoadProgress(Message):
    """A progress line from a worker; consecutive ones replace each other in the queue."""

    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LoadProgress)

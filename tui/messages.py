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


@dataclass
class DatasetLoaded(Message):
    """A worker finished reading a dataset: its rows, or why not (`error`, already described)."""

    path: str
    examples: list[Any] | None = None
    error: str = ""


@dataclass
class GenerationFinished(Message):
    """A generation worker ended: "done", "cancelled" or "failed" (with the error's words)."""

    outcome: str
    error: str = ""


@dataclass
class EvaluationFinished(Message):
    """An evaluation worker ended: its result (an `engine.evaluation.MatrixResult`), or None
    when it failed (the screen's error path has shown why)."""

    result: Any = None

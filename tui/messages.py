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


@dataclass
class SettingsFitted(Message):
    """The Train screen's fit worker: the settings suggested for the model and dataset."""

    suggestion: Any  # engine.training.suggest.Suggestion
    force: bool  # fit every field, not only those the user left alone


@dataclass
class FitFailed(Message):
    """The Train screen's fit worker could not fit the settings (the form keeps its values)."""

    error: str  # what went wrong, for the user


@dataclass
class PreflightDone(Message):
    """The Train screen's pre-flight (and launch) worker finished."""

    key: dict[str, Any]  # the config, as a dict, the report was made for
    report: Any  # engine.training.preflight.PreflightReport
    run: Any = None  # engine.training.rundir.RunDir when it launched


@dataclass
class AdapterSwitched(Message):
    """The Playground's adapter worker ended: the adapter (or the base) in use, the line saying
    which base it runs on, warnings, and a base it had to load; or why not (`error`)."""

    label: str = ""
    line: str = ""
    warnings: list[str] | None = None
    new_base: Any = None  # engine.models.LoadedModel when the adapter's own base was loaded
    base_ref: str = ""
    error: str = ""


@dataclass
class ModelLoaded(Message):
    """The App's model worker ended: the loaded model, or why not (`error`, described)."""

    ref: str
    loaded: Any = None  # engine.models.LoadedModel
    error: str = ""


@dataclass
class DatasetChecked(Message):
    """The Data screen's worker read and validated a dataset: the report, token stats and a
    note (`tui.screens.data.Loaded`). A failure goes through the screen's error path instead."""

    loaded: Any

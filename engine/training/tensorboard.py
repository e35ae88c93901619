"""TensorBoard event files in the run directory, beside events.jsonl.

events.jsonl stays the one source of truth (the TUI and the CLI read it); this mirrors what it
gains into TensorBoard's format, so ``tensorboard --logdir <data home>/runs`` shows every run:
train loss, learning rate, grad norm, throughput and the preference metrics (rewards, ...) as
``train/*`` scalars, the evaluation loss as ``eval/*``, and the sample completions as text.

It is a trainer callback that reads the events appended since its last look (a cursor, like
the TUI's), so it needs no hook in the code that writes them and cannot disagree with them.
On when the ``tensorboard`` package is installed (torch's SummaryWriter needs it) unless the
config says ``tensorboard: false``; without the package it is off and says so once in
train.log.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from transformers import TrainerCallback

from engine.training.rundir import EventCursor, RunDir

# Fields of a log / eval event that are not metrics.
_NOT_SCALARS = {"type", "step", "t", "epoch", "error", "state"}
_NAMES = {"loss": "loss", "lr": "learning_rate", "eval_loss": "loss"}


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardMirror:
    """Writes run events to TensorBoard event files in `run`'s directory."""

    def __init__(self, run: RunDir, from_start: bool = False) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.writer = SummaryWriter(log_dir=str(run.path))
        # A resumed run already mirrored what came before it (in an earlier events file).
        self.cursor = EventCursor()
        if not from_start and run.events_path.is_file():
            self.cursor.offset = run.events_path.stat().st_size
        self._sample_index: dict[int, int] = {}

    def write(self, event: dict[str, Any]) -> None:
        kind, step = event.get("type"), event.get("step")
        if not isinstance(step, int):
            return
        when = event.get("t")
        if kind in ("log", "eval"):
            group = "train" if kind == "log" else "eval"
            for key, value in event.items():
                if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(
                        value, (int, float)):
                    continue
                name = _NAMES.get(key, key.removeprefix("eval_"))
                self.writer.add_scalar(f"{group}/{name}", value, step, walltime=when)
        elif kind == "sample":
            index = self._sample_index.get(step, 0)
            self._sample_index[step] = index + 1
            text = (f"**prompt**\n\n{_block(event.get('prompt'))}\n\n"
                    f"**reference**\n\n{_block(event.get('reference'))}\n\n"
                    f"**completion**\n\n{_block(event.get('completion'))}")
            self.writer.add_text(f"samples/{index}", text, step, walltime=when)

    def sync(self) -> int:
        """Mirror the events appended since the last call; returns how many were read."""
        events = self.run.read_events(self.cursor)
        for event in events:
            self.write(event)
        if events:
            self.writer.flush()
        return len(events)

    def close(self) -> None:
        self.sync()
        self.writer.close()


def _block(text: Any) -> str:
    """Markdown that keeps the text as written (TensorBoard renders text summaries as markdown)."""
    body = "" if text is None else str(text)
    return "    " + body.replace("\n", "\n    ") if body else "*(none)*"


class TensorBoardCallback(TrainerCallback):
    """Mirrors the run's events after each log, evaluation, sample and at the end."""

    def __init__(self, run: RunDir) -> None:
        self.mirror = TensorBoardMirror(run)

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.mirror.sync()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.mirror.sync()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.mirror.sync()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.mirror.close()


def callbacks(run: RunDir, config: Any, log: Any = print) -> list[Any]:
    """The TensorBoard callback for a run, or none (turned off, or the package is missing)."""
    from engine.training.distributed import is_main_process

    if not getattr(config, "tensorboard", True) or not is_main_process():
        return []  # rank 0 alone writes the run directory
    if not available():
        log("tensorboard: not installed, so no TensorBoard event files for this run "
            "(pip install tensorboard, or set tensorboard: false to silence this)")
        return []
    return [TensorBoardCallback(run)]

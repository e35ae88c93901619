"""Trainer callbacks: where metrics leave the trainer (as run-directory events) and where the
run directory's controls (stop, save-now) reach it.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import Any

from transformers import TrainerCallback

from engine.training.data import Conversation, prompt_ids
from engine.training.rundir import RunDir

# Seconds to pause after each step: lets tests and demos catch a tiny model mid-run.
STEP_DELAY = float(os.environ.get("TUNEDECK_STEP_DELAY", "0") or 0)


class StopFlag:
    """Set by SIGTERM (or SIGINT); read by the trainer between steps. The handler only sets a flag:
    checkpointing inside a signal handler would run in the middle of a step."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: int | None = None

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._handle)
                          for sig in (signal.SIGTERM, signal.SIGINT)}

    def uninstall(self) -> None:
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def memory_mb() -> float:
    """Accelerator memory in use where there is one, else the process's resident memory."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**20
    except Exception:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def last_steps(run: RunDir) -> dict[str, int]:
    """The highest step already recorded per event type (a resumed run does not re-emit them)."""
    seen: dict[str, int] = {}
    for event in run.read_events():
        step = event.get("step")
        if isinstance(step, int):
            seen[event["type"]] = max(seen.get(event["type"], -1), step)
    return seen


class RunEventsCallback(TrainerCallback):
    """Writes log / eval / sample events and status updates; obeys stop and save-now."""

    def __init__(self, run: RunDir, stop_flag: StopFlag, tokenizer: Any,
                 samples: list[Conversation], sample_every: int = 0, max_new_tokens: int = 96):
        self.run = run
        self.stop_flag = stop_flag
        self.tokenizer = tokenizer
        self.samples = samples
        self.sample_every = sample_every
        self.max_new_tokens = max_new_tokens
        self.trainer: Any = None  # set by the runner: tokens seen, model for samples
        self.recorded = last_steps(run)
        # Throughput counts the time inside optimizer steps only: evaluation and sampling between
        # steps would otherwise show up as a slow step.
        self._step_t0 = 0.0
        self._step_tokens0 = 0
        self._window_s = 0.0
        self._window_tokens = 0
        self._last_status_t = 0.0
        self.stopped_by_request = False

    # ------------------------------------------------------------------ helpers
    def _fresh(self, kind: str, step: int) -> bool:
        return step > self.recorded.get(kind, -1)

    def _emit(self, kind: str, step: int, **fields: Any) -> None:
        if self._fresh(kind, step):
            self.run.append_event(kind, step=step, **fields)
            self.recorded[kind] = step

    def _status(self, state: Any, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_status_t > 2.0:
            self._last_status_t = now
            current = self.run.read_status().get("state")
            if current == "stopping":  # keep what a UI asked for visible
                self.run.write_status("stopping", step=state.global_step,
                                      total_steps=state.max_steps)
            else:
                self.run.write_status("running", step=state.global_step,
                                      total_steps=state.max_steps)

    # ------------------------------------------------------------------ trainer hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run.read_status().get("state") != "stopping":
            self.run.write_status("running", step=state.global_step, total_steps=state.max_steps,
                                  pid=os.getpid())
            self.run.append_event("state", state="running", step=state.global_step)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_t0 = time.monotonic()
        self._step_tokens0 = getattr(self.trainer, "tokens_seen", 0)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        if self._step_t0:
            self._window_s += time.monotonic() - self._step_t0
            self._window_tokens += getattr(self.trainer, "tokens_seen", 0) - self._step_tokens0
        if STEP_DELAY:
            time.sleep(STEP_DELAY)
        if self.run.save_now_path.exists():
            control.should_save = True
            self.run.save_now_path.unlink(missing_ok=True)
        if self.stop_flag.is_set():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_by_request = True
        if (self.sample_every and self.samples and step % self.sample_every == 0
                and self._fresh("sample", step) and not self.stop_flag.is_set()):
            self.write_samples(step, kwargs.get("model"))
        self._status(state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        step = state.global_step
        if "loss" in logs:
            rate = self._window_tokens / self._window_s if self._window_s and self._window_tokens \
                else None
            self._window_s, self._window_tokens = 0.0, 0
            self._emit("log", step, epoch=_num(logs.get("epoch", state.epoch)),
                       loss=_num(logs["loss"]), lr=_num(logs.get("learning_rate")),
                       grad_norm=_num(logs.get("grad_norm")),
                       tokens_per_s=round(rate, 1) if rate else None,
                       mem_mb=round(memory_mb(), 1))
            self._status(state, force=True)
        if "eval_loss" in logs:
            self._emit("eval", step, eval_loss=_num(logs["eval_loss"]))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._status(state, force=True)

    # ------------------------------------------------------------------ samples
    def write_samples(self, step: int, model: Any) -> None:
        if model is None:
            return
        for conv in self.samples:
            completion = self.generate(model, conv)
            prompt = conv.prompt[-1]["content"] if conv.prompt else ""
            self.run.append_event("sample", step=step, prompt=prompt, reference=conv.reference,
                                  completion=completion)
        self.recorded["sample"] = step

    def generate(self, model: Any, conv: Conversation) -> str:
        """Greedy completion of one validation prompt with the model as it is now."""
        import torch

        ids = prompt_ids(self.tokenizer, conv)
        ref_len = len(self.tokenizer(conv.reference, add_special_tokens=False)["input_ids"])
        budget = min(self.max_new_tokens, ref_len + 16)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                input_ids = torch.tensor([ids], device=device)
                out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                     max_new_tokens=budget, do_sample=False,
                                     pad_token_id=self.tokenizer.pad_token_id,
                                     eos_token_id=self.tokenizer.eos_token_id)
        finally:
            if was_training:
                model.train()
        return self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None

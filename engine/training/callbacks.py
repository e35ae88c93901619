"""Trainer callbacks: where metrics leave the trainer (as run-directory events) and where the
run directory's controls (stop, save-now) reach it.

Evaluation and sampling happen between steps and can take minutes on a CPU, so both report their
progress in status.json (`phase`, `phase_done` / `phase_total`, `phase_started`) for a UI's
"evaluating 24/72 · ETA 1m10s", and both give way to a stop request: the remaining evaluation
batches are skipped (that evaluation writes no eval event), generation ends at the next token,
and the checkpoint is written at the step boundary the run is at.

With several processes every rank runs these hooks, and every decision that changes what the
trainer does next (stop, save now, skip the rest of an evaluation) is all-reduced at a hook all
ranks pass together (`distributed.agree`), so they stop and save at the same step. Rank 0 alone
samples and writes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from engine.notices import explain_library_noise

# Before transformers: importing it imports bitsandbytes, which may warn right then.
explain_library_noise()

from transformers import StoppingCriteria, TrainerCallback  # noqa: E402

from engine.training.data import Conversation, prompt_ids  # noqa: E402
from engine.training.distributed import agree, is_main_process, rank  # noqa: E402
from engine.training.rundir import RunDir  # noqa: E402

# Seconds to pause after each step (and each evaluation batch): lets tests and demos catch a tiny
# model mid-run, or mid-evaluation.
STEP_DELAY = float(os.environ.get("TUNEDECK_STEP_DELAY", "0") or 0)
EVAL_DELAY = float(os.environ.get("TUNEDECK_EVAL_DELAY", "0") or 0)
PHASE_STATUS_SECONDS = 1.0  # how often evaluation / sampling progress rewrites status.json


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

    def set(self) -> None:
        """A stop that another rank was asked for: this one stops at the same step."""
        self.event.set()


def fail_if_asked(step: int) -> None:
    """TUNEDECK_FAIL_AT=RANK:STEP makes that rank raise at the end of that step: how a test
    makes one rank of a multi-process run die through the real failure path."""
    spec = os.environ.get("TUNEDECK_FAIL_AT", "")
    if spec and spec == f"{rank()}:{step}":
        raise RuntimeError(f"injected failure on rank {rank()} at step {step} "
                           "(TUNEDECK_FAIL_AT)")


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
        self._trainer: Any = None
        self.recorded = last_steps(run)
        # Throughput counts the time inside optimizer steps only: evaluation and sampling between
        # steps would otherwise show up as a slow step.
        self._step_t0 = 0.0
        self._step_tokens0 = 0
        self._window_s = 0.0
        self._window_tokens = 0
        self._last_status_t = 0.0
        self.stopped_by_request = False
        self._phase: dict[str, Any] = {}  # the evaluation / sampling in progress
        self._phase_status_t = 0.0
        self._eval_interrupted = False
        self._save_requested_at: int | None = None

    @property
    def trainer(self) -> Any:
        """Set by the runner: tokens seen, the model for samples, the evaluation to interrupt."""
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Any) -> None:
        self._trainer = trainer
        if trainer is not None and not getattr(trainer, "_tunedeck_interruptible", False):
            interruptible_evaluation(trainer, self)

    # ------------------------------------------------------------------ helpers
    def _fresh(self, kind: str, step: int) -> bool:
        return step > self.recorded.get(kind, -1)

    def _emit(self, kind: str, step: int, **fields: Any) -> None:
        if self._fresh(kind, step):
            self.run.append_event(kind, step=step, **fields)
            self.recorded[kind] = step

    def _status(self, state: Any, force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        if force or now - self._last_status_t > 2.0:
            self._last_status_t = now
            current = self.run.read_status().get("state")
            # "stopping" stays: it is what a UI asked for and is waiting to see end.
            self.run.write_status("stopping" if current == "stopping" else "running",
                                  step=state.global_step, total_steps=state.max_steps, **fields)

    # ------------------------------------------------------------------ evaluation / sampling
    def _begin_phase(self, state: Any, phase: str, total: int) -> None:
        self._phase = {"phase": phase, "phase_done": 0, "phase_total": total,
                       "phase_started": time.time()}
        self._phase_status_t = time.monotonic()
        self._status(state, force=True, **self._phase)

    def _advance_phase(self, state: Any, done: int) -> None:
        self._phase["phase_done"] = done
        now = time.monotonic()
        if now - self._phase_status_t >= PHASE_STATUS_SECONDS:
            self._phase_status_t = now
            self._status(state, force=True, **self._phase)

    def _end_phase(self, state: Any, **fields: Any) -> None:
        self._phase = {}
        self._status(state, force=True, phase=None, phase_done=None, phase_total=None,
                     phase_started=None, **fields)

    def _eval_rows(self) -> int:
        dataset = getattr(self.trainer, "eval_dataset", None)
        try:
            return len(dataset) if dataset is not None else 0
        except TypeError:
            return 0

    def _stop_here(self, control: Any) -> None:
        """End the run at this step boundary, with a checkpoint."""
        control.should_save = True
        control.should_training_stop = True
        self.stopped_by_request = True

    def _agreed(self, args: Any, control: Any, step: int) -> bool:
        """Take the stop and save-now requests as every rank sees them (rank 0 reads the
        save-now file; any rank may have been signalled); True when the run stops here."""
        asked = is_main_process() and self.run.save_now_path.exists()
        stop, save = agree(self.stop_flag.is_set(), asked, device=getattr(args, "device", None))
        if save:
            control.should_save = True
            if asked:
                self.run.save_now_path.unlink(missing_ok=True)
            self._save_requested_at = step
        if stop:
            self.stop_flag.set()
        return stop

    # ------------------------------------------------------------------ trainer hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run.read_status().get("state") != "stopping":
            self.run.write_status("running", step=state.global_step, total_steps=state.max_steps,
                                  pid=os.getpid(), phase=None)  # none left from a killed run
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
        fail_if_asked(step)
        if (self.sample_every and self.samples and step % self.sample_every == 0
                and self._fresh("sample", step) and not self.stop_flag.is_set()
                and is_main_process()):
            self.write_samples(step, kwargs.get("model"), state)
        if self._agreed(args, control, step):  # asked before sampling, or during it
            self._stop_here(control)
        elif control.should_evaluate and self._eval_rows():
            # The trainer evaluates right after this hook: "evaluating 0/N" from the start.
            self._eval_interrupted = False
            self._begin_phase(state, "evaluating", self._eval_rows())
        self._status(state)

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._phase:  # an evaluation this callback did not see coming (epoch end)
            self._eval_interrupted = False
            self._begin_phase(state, "evaluating", self._eval_rows())
        done = self._phase.get("phase_done", 0) + args.eval_batch_size
        self._advance_phase(state, min(done, self._phase.get("phase_total") or done))
        if EVAL_DELAY and not self.stop_flag.is_set():
            time.sleep(EVAL_DELAY)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        seconds = time.time() - self._phase.get("phase_started", time.time())
        fields = {} if self._eval_interrupted else {"eval_seconds": round(seconds, 2),
                                                     "eval_rows": self._eval_rows()}
        self._end_phase(state, **fields)
        # Evaluation runs after on_step_end and before the checkpoint of this step: a stop or
        # save-now that came in meanwhile is honoured at this very step boundary.
        if self._agreed(args, control, state.global_step):
            self._stop_here(control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._save_requested_at is not None:
            self._save_requested_at = None
            print(f"[{time.strftime('%H:%M:%S')}] save now: wrote checkpoint-{state.global_step}",
                  flush=True)

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
        if "eval_loss" in logs and not self._eval_interrupted:
            # seconds and rows let a later pre-flight estimate evaluation from measured runs.
            self._emit("eval", step, eval_loss=_num(logs["eval_loss"]),
                       seconds=_num(logs.get("eval_runtime")), rows=self._eval_rows() or None)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._status(state, force=True)

    # ------------------------------------------------------------------ samples
    def write_samples(self, step: int, model: Any, state: Any = None) -> None:
        if model is None:
            return
        if state is not None:
            self._begin_phase(state, "sampling", len(self.samples))
        started = time.time()
        for i, conv in enumerate(self.samples):
            completion = self.generate(model, conv)
            if self.stop_flag.is_set():  # cut short by a stop: not a sample of this model
                break
            prompt = conv.prompt[-1]["content"] if conv.prompt else ""
            self.run.append_event("sample", step=step, prompt=prompt, reference=conv.reference,
                                  completion=completion)
            if state is not None:
                self._advance_phase(state, i + 1)
        self.recorded["sample"] = step
        if state is not None:
            self._end_phase(state, sample_seconds=round(time.time() - started, 2))

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
                                     eos_token_id=self.tokenizer.eos_token_id,
                                     stopping_criteria=[StopRequested(self.stop_flag)])
        finally:
            if was_training:
                model.train()
        return self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


class StopRequested(StoppingCriteria):
    """A generation stopping criterion: a stop request ends a sample at the next token."""

    def __init__(self, stop_flag: StopFlag) -> None:
        self.stop_flag = stop_flag

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.stop_flag.is_set(), dtype=torch.bool,
                          device=input_ids.device)


def interruptible_evaluation(trainer: Any, callback: RunEventsCallback) -> None:
    """Make the trainer's evaluation give way to a stop request.

    The trainer's evaluation loop has no way out before its last batch; once a stop is asked for,
    each remaining batch's prediction step returns nothing instead of running the model, so the
    loop ends in the time it takes to collate the rest. Works for any Trainer subclass (SFT,
    DPO, KTO), since they all evaluate through `prediction_step`.
    """
    original = trainer.prediction_step

    def prediction_step(model: Any, inputs: Any, prediction_loss_only: bool,
                        ignore_keys: Any = None) -> Any:
        # Every rank skips from the same batch on: one that ran a batch the others skipped
        # would wait in its gather for ever.
        stop, = agree(callback.stop_flag.is_set(), device=trainer.args.device)
        if stop:
            callback.stop_flag.set()
            callback._eval_interrupted = True
            return None, None, None
        return original(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    trainer.prediction_step = prediction_step
    trainer._tunedeck_interruptible = True


def _num(value: Any) -> float | None:
    """A metric as a float; NaN and inf are kept as they are (a diverged run must show "nan",
    never a plausible number)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None

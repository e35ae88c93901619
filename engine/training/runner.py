"""The training process: ``python -m engine.training RUN_DIR``.

It reads RUN_DIR/config.yaml, trains with its method's recipe (`engine.training.recipes`: SFT
or preference training, over TRL + PEFT + bitsandbytes) and talks only through the run directory: status.json, events.jsonl, checkpoints/, adapter/. When
checkpoints exist it resumes from the newest (optimizer, scheduler and RNG included) and appends
to the same events file. SIGTERM → checkpoint → "stopped". Any failure → "failed" with the
error, and for out-of-memory with concrete advice.

Under ``accelerate launch`` each rank runs this. Rank 0 holds the lock and writes the run
directory; the others see it read-only (`_ReadOnlyRun`). A rank that fails leaves its error
in the run directory (`distributed.record_failure`); rank 0, whose next collective then fails,
records the run as failed with that rank's error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError
from engine.training import distributed
from engine.training.config import TrainConfig
from engine.training.distributed import is_main_process
from engine.training.recipes import recipe_for
from engine.training.rundir import RunDir, process_start_time
from engine.training.shared import log

# Seconds a runner waits for the run's lock: `resume` holds it while it hands the run over.
LOCK_WAIT = 10.0

OOM_ADVICE = (
    "Out of memory. Try, in this order: a smaller batch_size with a larger grad_accum (same "
    "effective batch), method=qlora (4-bit weights), a shorter max_seq_len. (On CUDA gradient "
    "checkpointing is on only where the memory estimate says the activations do not fit "
    "without it; where that estimate was too low, the smaller batch is the way.)"
)


def is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, MemoryError) or "out of memory" in text or "outofmemory" in text \
        or "can't allocate memory" in text or "cannot allocate memory" in text


def train(run: RunDir, stop_flag: Any) -> str:
    """Train the run with its method's recipe to its end, a stop request or a failure; returns
    the final state."""
    config = TrainConfig.from_yaml(run.config_path)
    config.validate(device_checks=False)
    return recipe_for(config.method).train(run, stop_flag, config)


class _ReadOnlyRun(RunDir):
    """The run directory as non-zero ranks see it: they read, never write."""

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        return self.read_status()

    def append_event(self, type: str, **fields: Any) -> dict[str, Any]:
        return {"type": type, **fields}

    def repair_events(self) -> None:
        pass

    def adopt_checkpoints(self) -> None:
        pass

    def request_save(self) -> None:
        pass


def main(run_dir: str | Path) -> int:
    from engine.training.callbacks import StopFlag

    path = Path(run_dir).resolve()
    run = RunDir(path) if is_main_process() else _ReadOnlyRun(path)
    if not run.config_path.is_file():
        print(f"{run.path}: no config.yaml, not a run directory.", file=sys.stderr)
        return 2
    lock = None
    if is_main_process():
        try:
            lock = run.acquire_lock(wait=LOCK_WAIT)
        except TunedeckError as err:
            print(f"tunedeck: {err}", file=sys.stderr)
            return 2
        if lock is None:
            # Another runner trains this run: its status and events are not ours to touch.
            holder = run.lock_holder() or {}
            print(f"tunedeck: run {run.id} already has a runner (pid {holder.get('pid', '?')}, "
                  f"holding {run.lock_path}); this one ends without touching it.",
                  file=sys.stderr)
            return 3
    stop_flag = StopFlag()
    stop_flag.install()
    try:
        return _run(run, stop_flag)
    finally:
        stop_flag.uninstall()
        run.release_lock(lock)


def _run(run: RunDir, stop_flag: Any) -> int:
    # Library deprecation chatter would bury the lines that matter in train.log.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        run.repair_events()
        # The pid with its start time: `stop` signals only that very process.
        run.write_status("starting", pid=os.getpid(), pid_start=process_start_time(os.getpid()),
                         error=None, **_launcher_fields())
        run.adopt_checkpoints()
        state = train(run, stop_flag)
    except BaseException as err:  # the state must say "failed" whatever broke
        with contextlib.suppress(OSError):
            traceback.print_exc()
        if isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and not err.code):
            state, message = "stopped", None
        else:
            first = (str(err).strip().splitlines() or [""])[0][:200]
            message = f"{OOM_ADVICE} ({type(err).__name__}: {first})" if is_oom(err) \
                else describe(err)
            state = "failed"
            message = _with_peer_failures(run, message)
        log(f"{state}: {message}" if message else state, every_rank=True)
        if not run.write_final_status(state, error=message, pid=os.getpid()):
            log("could not record this in status.json either")
        try:
            run.append_event("state", state=state, **({"error": message} if message else {}))
        except TunedeckError as write_err:  # rundir.RunWriteError: say so in train.log
            log(str(write_err))
        return 1 if state == "failed" else 0
    run.write_status(state, error=None, pid=os.getpid(), finished=time.time())
    run.append_event("state", state=state)
    log(state)
    return 0


def _launcher_fields() -> dict[str, Any]:
    """The accelerate launcher above rank 0, so a UI can tell when the whole launch ended."""
    pid = distributed.launcher_pid() if is_main_process() else None
    if pid is None:
        return {}
    return {"launcher_pid": pid, "launcher_pid_start": process_start_time(pid),
            "world_size": distributed.world_size()}


def _with_peer_failures(run: RunDir, message: str) -> str:
    """Rank 0: a failed rank's own error explains the run's failure better than the broken
    connection rank 0 saw. Any other rank: leave the error for rank 0."""
    if not is_main_process():
        distributed.record_failure(run.path, message)
        return message
    if distributed.world_size() < 2:
        return message
    peers = distributed.rank_failures(run.path, wait=distributed.PEER_WAIT)
    if not peers:
        return message
    # Rank 0's own error is then the broken connection to it (its traceback is in train.log).
    return "; ".join(f"rank {r} failed: {text}" for r, text in peers) + \
        "; the other ranks stopped with it"


def describe(err: BaseException) -> str:
    if isinstance(err, TunedeckError):
        return str(err)
    from engine.training.rundir import is_disk_full, write_failure

    if is_disk_full(err):  # wherever it happened: say it plainly, with the file when known
        assert isinstance(err, OSError)
        what = Path(err.filename).name if isinstance(err.filename, str) else "the run directory"
        return str(write_failure(err, what))
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''} (see train.log)"

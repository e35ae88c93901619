"""Several training processes of one run (``accelerate launch``, torchrun underneath): who
writes, how they agree, how one that fails is heard.

- Rank 0 alone writes the run directory (status, events, checkpoints' own files, adapter, the
  lock). The trainer has every rank save its RNG state into the checkpoint
  (``rng_state_<rank>.pth``), which resuming needs; besides that another rank writes only
  its failure note (below).
- Whatever changes the trainer's next move (stop here, save now, skip the rest of an
  evaluation) is decided by all ranks together (`agree`: an all-reduce), at points every rank
  passes in the same order. A rank that saved or stopped alone would wait forever in the next
  collective the others never enter. So `tunedeck stop` needs to reach rank 0 only.
- A rank other than 0 that fails writes its error into the run directory
  (``failed-rank-<rank>.json``) and ends. Over gloo rank 0's
  next collective then fails at once, and rank 0 records the run as failed with that rank's
  error instead of its own "connection closed". Where rank 0 cannot (NCCL waits on a dead peer
  until torchrun's agent kills it), the note is still there: `launch.run_summary` reports it.

Importing this module loads no ML library; torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

# A rank other than 0 that failed: its error, for rank 0 and for any reader of the run.
FAILURE_FILE = "failed-rank-{rank}.json"
# How long rank 0 looks for a failed rank's note: the failing rank writes it before it ends,
# and rank 0 hears of its end only after that, so this is slack, not a race.
PEER_WAIT = 2.0


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    """This process's rank on its machine: which of the machine's GPUs is its own."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def world_size() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def is_main_process() -> bool:
    """Only rank 0 writes the run directory."""
    return rank() == 0


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    if world_size() < 2:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agree(*flags: bool, device: Any = None) -> tuple[bool, ...]:
    """Each flag as every rank sees it: true when it is true on any rank (an all-reduce MAX).
    Every rank must call this at the same point; on one process it returns the flags as given.
    `device`: where the collective's tensor lives (NCCL needs the rank's GPU)."""
    if not is_distributed():
        return tuple(bool(f) for f in flags)
    import torch
    import torch.distributed as dist

    values = torch.tensor([int(bool(f)) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in values.tolist())


def record_failure(run_dir: str | Path, message: str) -> None:
    """A failing rank other than 0 leaves its error in the run directory: the one file a rank
    other than 0 writes. Best effort: without it, train.log (every rank's traceback) is the
    record."""
    from engine.training.rundir import atomic_write_text

    if is_main_process():
        return
    with contextlib.suppress(OSError):
        atomic_write_text(Path(run_dir) / FAILURE_FILE.format(rank=rank()),
                          json.dumps({"rank": rank(), "error": message, "t": time.time()}))


def rank_failures(run_dir: str | Path, wait: float = 0.0) -> list[tuple[int, str]]:
    """(rank, error) of every rank that recorded a failure in the run directory, looked for up
    to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for path in sorted(Path(run_dir).glob(FAILURE_FILE.format(rank="*"))):
            try:
                note = json.loads(path.read_text(encoding="utf-8"))
                found.append((int(note["rank"]), str(note["error"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if found or time.monotonic() >= deadline:
            return sorted(found)
        time.sleep(0.1)


def clear_failures(run_dir: str | Path) -> None:
    """Before a new launch of the run: the last one's notes are not this one's."""
    for path in Path(run_dir).glob(FAILURE_FILE.format(rank="*")):
        path.unlink(missing_ok=True)


def launcher_pid() -> int | None:
    """The accelerate launcher that started this rank (torchrun's agent runs inside it), or
    None when this process was not started by torchrun."""
    return os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None


def describe_world(per_device: int, grad_accum: int, processes: int | None = None) -> str:
    """"global batch 8 = 2 per device x 2 processes x 2 accumulation steps"."""
    n = world_size() if processes is None else processes
    return (f"global batch {per_device * n * grad_accum} = {per_device} per device x {n} "
            f"process{'es' if n != 1 else ''} x {grad_accum} accumulation "
            f"step{'s' if grad_accum != 1 else ''}")

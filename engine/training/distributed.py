"""Several training processes of one run (``accelerate launch``, torchrun underneath): who
writes, how they agree, how one that fails is heard.

- Rank 0 alone writes the run directory (status, events, checkpoints' own files, adapter, the
  lock). The trainer has every rank save its RNG state into the checkpoint
  (``rng_state_<rank>.pth``), which resuming needs; nothing else comes from another rank.
- Whatever changes the trainer's next move (stop here, save now, skip the rest of an
  evaluation) is decided by all ranks together (`agree`: an all-reduce), at points every rank
  passes in the same order. A rank that saved or stopped alone would wait forever in the next
  collective the others never enter. So `tunedeck stop` needs to reach rank 0 only.
- A rank other than 0 that fails writes its error into the rendezvous store every rank shares
  (torchrun's agent holds it, so it outlives the rank) and ends; rank 0's next collective then
  fails, and rank 0 records the run as failed with that rank's error (`peer_failures`) instead
  of its own "connection closed".

Importing this module loads no ML library; torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

FAILURE_KEY = "tunedeck/failed/{rank}"
# How long rank 0 looks for a failed rank's message: the failing rank writes it before it
# ends, and rank 0 hears of its end only after that, so this is slack, not a race.
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


def _store() -> Any:
    if not is_distributed():
        return None
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:  # a torch without it, or a group set up without a store
        return None


def report_failure(message: str) -> None:
    """A failing rank other than 0 leaves its error where rank 0 reads it. Best effort: a
    store that cannot be reached leaves train.log (every rank's traceback) as the record."""
    store = _store()
    if store is None or is_main_process():
        return
    with contextlib.suppress(Exception):
        store.set(FAILURE_KEY.format(rank=rank()), message.encode("utf-8", "replace"))


def peer_failures(wait: float = PEER_WAIT) -> list[tuple[int, str]]:
    """(rank, error) of every other rank that reported a failure, looked for up to `wait`
    seconds; [] on one process or when none did."""
    store = _store()
    if store is None:
        return []
    keys = {r: FAILURE_KEY.format(rank=r) for r in range(world_size()) if r != rank()}
    deadline = time.monotonic() + wait
    while True:
        found = []
        for r, key in keys.items():
            try:
                if store.check([key]):
                    found.append((r, store.get(key).decode("utf-8", "replace")))
            except Exception:
                return found
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


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

"""The run directory: the one protocol between a training process and any UI.

```
runs/<run-id>/
  config.yaml    the full resolved config
  status.json    {"state", "pid", "error", ...}, replaced atomically
  events.jsonl   append-only, one JSON object per line, flushed per line
  checkpoints/   trainer checkpoints (resume)
  adapter/       final PEFT adapter
  train.log      the process's stdout/stderr
  save-now       dropped by a UI: the runner checkpoints at the next step and removes it
  runner.lock    flock()ed by the one runner for its whole life (the OS releases it on any exit);
                 holds that runner's pid and process start time
  failed-rank-N.json  a rank other than 0 of a multi-process run that failed: its error
```

Readers tolerate a half-written last line: it is left unread until its newline arrives.
A checkpoint counts only once it is complete (see `is_complete_checkpoint`).
Nothing here imports torch.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import TunedeckError

STATES = ("starting", "running", "stopping", "stopped", "done", "failed")
ACTIVE_STATES = ("starting", "running", "stopping")
EVENT_TYPES = ("log", "eval", "sample", "state")

CONFIG = "config.yaml"
STATUS = "status.json"
EVENTS = "events.jsonl"
LOG = "train.log"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
SAVE_NOW = "save-now"
LOCK = "runner.lock"
# Written into a checkpoint folder after the trainer has saved everything in it: a folder without
# it was cut short (disk full, killed mid-save) and is never resumed from.
COMPLETE = "checkpoint-complete.json"
TRAINER_STATE = "trainer_state.json"  # the trainer writes it last in a checkpoint


def new_run_id(name: str = "") -> str:
    """A sortable, unique id: ``20261129-081500-<name>-ab12``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-")[:32]
    suffix = secrets.token_hex(2)
    return f"{stamp}-{slug}-{suffix}" if slug else f"{stamp}-{suffix}"


class RunWriteError(TunedeckError):
    """A file of the run could not be written (disk full, read-only, quota)."""


def write_failure(err: OSError, what: str) -> RunWriteError:
    if is_disk_full(err):
        return RunWriteError(f"disk full while writing {what} — free space and resume")
    return RunWriteError(f"could not write {what} ({err.strerror or err}) — fix that and resume")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file so readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves no temporary file behind
        raise


def process_start_time(pid: int | None) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22), or None where that
    cannot be read. A pid together with its start time names one process: a recycled pid has a
    different start time."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def same_process(pid: int | None, start: Any) -> bool:
    """Whether `pid` is alive and is the very process that recorded `start`."""
    if not pid or start is None or not pid_alive(pid):
        return False
    return process_start_time(pid) == start


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); look at its state where /proc exists.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(") ", 1)[1][:1] != "Z"
        except (OSError, IndexError):
            return True
    return True


@dataclass
class EventCursor:
    """Where a reader of events.jsonl is: a byte offset just past the last whole line."""

    offset: int = 0


@dataclass
class RunDir:
    path: Path
    _status_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ locations
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER

    @property
    def save_now_path(self) -> Path:
        return self.path / SAVE_NOW

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK

    # ------------------------------------------------------------------ status
    def read_status(self) -> dict[str, Any]:
        """The last complete status; {} before the first write."""
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        status = {**self.read_status(), **fields, "state": state, "updated": time.time()}
        try:
            atomic_write_text(self.status_path, json.dumps(status, indent=1))
        except OSError as err:
            raise write_failure(err, STATUS) from err
        return status

    def write_final_status(self, state: str, **fields: Any) -> bool:
        """The runner's last word, written even on a full disk: when the atomic write (which
        needs room for a second copy) fails, the file is rewritten in place (truncating it frees
        the blocks the new text needs). False when neither worked."""
        try:
            self.write_status(state, **fields)
            return True
        except RunWriteError:
            pass
        status = {**self.read_status(), **fields, "state": state, "updated": time.time()}
        try:
            with open(self.status_path, "r+" if self.status_path.exists() else "w",
                      encoding="utf-8") as f:
                f.truncate(0)
                f.write(json.dumps(status, indent=1))
            return True
        except OSError:
            return False

    def state(self, status: dict[str, Any] | None = None, lock_free: bool = False) -> str:
        """The state, corrected for a runner that died without saying so (kill -9, power loss,
        a status it could not write). `status`: a status the caller has just read, so the file
        is not read twice; `lock_free`: the caller holds the lock itself, so no runner does."""
        status = self.read_status() if status is None else status
        state = status.get("state", "starting" if self.config_path.exists() else "unknown")
        if state in ACTIVE_STATES and status.get("pid") and not self._runner_alive(status,
                                                                                 lock_free):
            return "failed"
        return state

    def _runner_alive(self, status: dict[str, Any], lock_free: bool = False) -> bool:
        if not lock_free and self.lock_holder() is not None:
            return True
        if "pid_start" in status:  # the pid is proven by its start time (a recycled one is not)
            return same_process(status["pid"], status["pid_start"])
        return pid_alive(status["pid"])  # a run from before start times were recorded

    def is_active(self) -> bool:
        return self.state() in ACTIVE_STATES

    # ------------------------------------------------------------------ events
    def append_event(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append one event as one line and flush it, so a reader sees it at once."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = {"type": type, **fields}
        event.setdefault("t", time.time())
        line = json.dumps(event, default=_json_default) + "\n"
        try:
            with open(self.events_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
        except OSError as err:
            raise write_failure(err, EVENTS) from err
        return event

    def read_events(self, cursor: EventCursor | None = None) -> list[dict[str, Any]]:
        """Events after `cursor` (advanced in place). A half-written last line is left for the
        next call; a corrupt whole line (from a crash mid-write, then appended to) is skipped."""
        cursor = cursor if cursor is not None else EventCursor()
        try:
            with open(self.events_path, "rb") as f:
                f.seek(cursor.offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        events = []
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                # A line cut by kill -9 and then continued by a resumed runner: the fragment
                # is unreadable, the events after it are fine.
                frag = raw.rfind(b'{"type"')
                if frag <= 0:
                    continue
                try:
                    event = json.loads(raw[frag:])
                except ValueError:
                    continue
            if isinstance(event, dict):
                events.append(event)
        cursor.offset += end + 1
        return events

    def iter_events(self) -> Iterator[dict[str, Any]]:
        yield from self.read_events()

    def repair_events(self) -> None:
        """End a half-written last line (after kill -9) so appended events start on a new line."""
        try:
            with open(self.events_path, "rb+") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        except OSError:
            pass

    # ------------------------------------------------------------------ the runner lock
    def acquire_lock(self, wait: float = 0.0) -> int | None:
        """Take the runner lock (an exclusive flock on runner.lock), trying for up to `wait`
        seconds; the open descriptor, or None when another process holds it. The lock lives as
        long as the descriptor: `release_lock`, or the process ending in any way."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:  # a read-only or full run directory
            raise write_failure(err, LOCK) from err
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        pid = os.getpid()
        os.pwrite(fd, json.dumps({"pid": pid, "pid_start": process_start_time(pid)}).encode(), 0)
        return fd

    @staticmethod
    def release_lock(fd: int | None) -> None:
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def lock_holder(self) -> dict[str, Any] | None:
        """{"pid", "pid_start"} of the process holding the runner lock, or None when nobody
        holds it. ({} while a new holder has not written its pid yet.)"""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = json.loads(os.pread(fd, 256, 0) or b"{}")
                except ValueError:
                    holder = {}
                return holder if isinstance(holder, dict) else {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def runner_pid(self, status: dict[str, Any] | None = None) -> int | None:
        """The pid of this run's runner, only when it is proven to be that process: the holder
        of the runner lock, or (before the runner has taken the lock) the pid recorded in the
        status together with the same process start time. Never a bare pid that may have been
        recycled by an unrelated process."""
        holder = self.lock_holder()
        if holder:
            pid, start = holder.get("pid"), holder.get("pid_start")
            if isinstance(pid, int) and pid_alive(pid) and (
                    start is None or process_start_time(pid) == start):
                return pid
            return None
        if holder is not None:  # held, its pid not written yet
            return None
        status = self.read_status() if status is None else status
        pid = status.get("pid")
        if isinstance(pid, int) and same_process(pid, status.get("pid_start")):
            return pid
        return None

    # ------------------------------------------------------------------ control
    def request_save(self) -> None:
        self.save_now_path.touch()

    def stop(self, wait: float = 0.0) -> bool:
        """Ask the runner to stop (SIGTERM → checkpoint → stopped). True if a signal was sent,
        which happens only to a process proven to be this run's runner (`runner_pid`)."""
        status = self.read_status()
        if status.get("state") not in ACTIVE_STATES:
            return False
        pid = self.runner_pid(status)
        if pid is None:
            return False
        self.write_status("stopping")
        try:
            # A detached runner leads its own process group; one sharing our group (a
            # foreground run in this process) gets the signal alone. Under accelerate the
            # runner is rank 0, which torchrun starts in a group of its own: the other ranks
            # hear of the stop from it (callbacks: the flag is all-reduced at each step), and
            # torchrun's agent, spared the signal, does not tear the ranks down mid-save.
            group = os.getpgid(pid)
            if group != os.getpgrp():
                os.killpg(group, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        return True

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, oldest first (``checkpoint-<step>``), complete or not."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.is_dir()]
        return sorted(found, key=checkpoint_step)

    def complete_checkpoints(self, status: dict[str, Any] | None = None) -> list[Path]:
        """`status`: one the caller has just read (it says whether the run marks checkpoints)."""
        found = self.checkpoints()
        status = self.read_status() if status is None else status
        markers = bool(status.get("checkpoint_markers")) or any(
            (p / COMPLETE).is_file() for p in found)
        return [p for p in found if is_complete_checkpoint(p, markers)]

    def adopt_checkpoints(self) -> None:
        """From here on every checkpoint carries a completion marker: the whole ones of a run
        from before the markers get theirs first, so they stay resumable."""
        if self.read_status().get("checkpoint_markers"):
            return
        for path in self.complete_checkpoints():
            if not (path / COMPLETE).is_file():
                mark_checkpoint_complete(path, checkpoint_step(path))
        self.write_status(self.read_status().get("state", "starting"), checkpoint_markers=True)

    def cut_checkpoints(self, status: dict[str, Any] | None = None) -> list[Path]:
        """Checkpoints cut short (disk full, killed mid-save): never resumed from."""
        complete = set(self.complete_checkpoints(status))
        return [p for p in self.checkpoints() if p not in complete]

    def latest_checkpoint(self, status: dict[str, Any] | None = None) -> Path | None:
        """The newest complete checkpoint (a newer one cut short is passed over)."""
        found = self.complete_checkpoints(status)
        return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def mark_checkpoint_complete(path: Path, step: int) -> None:
    atomic_write_text(path / COMPLETE, json.dumps({"step": step, "t": time.time()}))


def is_complete_checkpoint(path: Path, markers: bool = True) -> bool:
    """A checkpoint holds its completion marker. In a run from before the markers (`markers`:
    whether any checkpoint of the run has one), the trainer state the trainer writes last must
    be there and whole."""
    if (path / COMPLETE).is_file():
        return True
    if markers:
        return False
    try:
        json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def runs_root() -> Path:
    return paths.runs_dir()


def open_run(run_id_or_path: str | Path) -> RunDir:
    """A run by id (under the data home), id prefix, or path."""
    candidate = Path(run_id_or_path).expanduser()
    if candidate.is_dir() and ((candidate / CONFIG).exists() or (candidate / STATUS).exists()):
        return RunDir(candidate.resolve())
    root = runs_root()
    exact = root / str(run_id_or_path)
    if exact.is_dir():
        return RunDir(exact)
    if root.is_dir():
        matches = [p for p in root.iterdir() if p.is_dir() and str(run_id_or_path) in p.name]
        if len(matches) == 1:
            return RunDir(matches[0])
        if len(matches) > 1:
            names = ", ".join(sorted(p.name for p in matches)[:5])
            raise TunedeckError(f"'{run_id_or_path}' matches several runs: {names}. Give more of the id.")
    raise TunedeckError(f"No run '{run_id_or_path}' under {root}. `tunedeck runs` lists the runs.")


def list_runs() -> list[RunDir]:
    """Every run under the data home, newest first."""
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(runs, key=lambda r: r.id, reverse=True)

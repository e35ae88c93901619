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
```

Readers tolerate a half-written last line: it is left unread until its newline arrives.
Nothing here imports torch.
"""

from __future__ import annotations

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


def new_run_id(name: str = "") -> str:
    """A sortable, unique id: ``20261129-081500-<name>-ab12``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-")[:32]
    suffix = secrets.token_hex(2)
    return f"{stamp}-{slug}-{suffix}" if slug else f"{stamp}-{suffix}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file so readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        atomic_write_text(self.status_path, json.dumps(status, indent=1))
        return status

    def state(self, status: dict[str, Any] | None = None) -> str:
        """The state, corrected for a runner that died without saying so (kill -9, power loss).
        `status`: a status the caller has just read, so the file is not read twice."""
        status = self.read_status() if status is None else status
        state = status.get("state", "starting" if self.config_path.exists() else "unknown")
        if state in ACTIVE_STATES and status.get("pid") and not pid_alive(status["pid"]):
            return "failed"
        return state

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
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
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

    # ------------------------------------------------------------------ control
    def request_save(self) -> None:
        self.save_now_path.touch()

    def stop(self, wait: float = 0.0) -> bool:
        """Ask the runner to stop (SIGTERM → checkpoint → stopped). True if a signal was sent."""
        status = self.read_status()
        pid = status.get("pid")
        if not pid or not pid_alive(pid) or status.get("state") not in ACTIVE_STATES:
            return False
        self.write_status("stopping")
        try:
            os.killpg(os.getpgid(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return False
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        return True

    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, oldest first (``checkpoint-<step>``)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.is_dir()]
        return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else -1)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None


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

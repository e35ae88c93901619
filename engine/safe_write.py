"""Writing an output file the one safe way: checked target, temp file, rename.

Every file a command writes for the user (a split, an export) goes through `output_file`:

- an existing file is replaced only with ``force`` (the CLI's ``--force``), and never when it is
  one of the command's own inputs, force or not;
- a folder as the target gets a file of the default name inside it, or is refused;
- the text goes to a temporary file beside the target, named ``.tunedeck-tmp-<pid>-<name>``, and
  is renamed over the target only when complete. A failed write removes its temporary file; a
  killed one leaves it behind, and the next write into that folder (or `clean_stale`) removes it,
  recognised by the prefix and a process id that no longer runs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from engine.errors import TunedeckError

TEMP_PREFIX = ".tunedeck-tmp-"
STALE_AFTER_S = 24 * 3600  # a temp file this old is stale even if its pid runs again


def temp_path(target: Path) -> Path:
    return target.parent / f"{TEMP_PREFIX}{os.getpid()}-{target.name}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clean_stale(folder: Path) -> list[Path]:
    """Remove temporary files that a killed write left in `folder`; returns what went."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        pid_text = entry.name[len(TEMP_PREFIX):].partition("-")[0]
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        mine = pid_text == str(os.getpid())
        if mine or (pid_text.isdigit() and _pid_alive(int(pid_text)) and age < STALE_AFTER_S):
            continue  # a write in progress
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


def clean_data_home() -> None:
    """`clean_stale` for the folders of the data home that tunedeck itself writes into."""
    from engine import paths

    for folder in (paths.home(), paths.exports_dir(), paths.templates_dir()):
        clean_stale(folder)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_target(target: Path, *, force: bool = False, inputs: Iterable[Path] = (),
                 default_name: str | None = None, what: str = "output") -> Path:
    """The file to write: `target`, or `default_name` inside it when `target` is a folder.
    Raises `TunedeckError` when it would overwrite an input, or an existing file without
    `force`."""
    target = Path(target).expanduser()
    if target.is_dir():
        if default_name is None:
            raise TunedeckError(f"{target}: is a folder; give the {what} a file name, e.g. "
                                f"{target / 'out.jsonl'}")
        target = target / default_name
        if target.is_dir():
            raise TunedeckError(f"{target}: is a folder; give the {what} a file name")
    for source in inputs:
        if _same_file(target, Path(source)):
            raise TunedeckError(f"{target}: is this command's input; write the {what} "
                                "somewhere else (it is never overwritten, --force or not)")
    if target.exists() and not force:
        raise TunedeckError(f"{target}: already exists; pass --force to replace it, or choose "
                            "another name")
    return target


def describe_os_error(err: OSError, path: Path | str | None = None) -> str:
    """A one-line reason for a failed write that says what to do (read-only, disk full, …)."""
    from engine.errors import describe_failure

    if path is not None and not err.filename:
        err.filename = str(path)
    return describe_failure(err)


@contextlib.contextmanager
def output_file(target: Path, *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """Write `target` through a temporary file that is renamed over it only when the block
    ends without an error; on any error (Ctrl+C included) the temporary file is removed."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TunedeckError(describe_os_error(err, target.parent)) from None
    clean_stale(target.parent)
    tmp = temp_path(target)
    try:
        with open(tmp, "w", encoding=encoding) as fh:
            yield fh
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise TunedeckError(describe_os_error(err, target)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise

"""Starting, resuming and stopping runs from any front end.

A run is a detached child process (its own session: it outlives the TUI and the SSH connection)
whose output goes to train.log — never a pipe that nobody drains. Everything a UI learns about a
run comes from the run directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import TunedeckError
from engine.training.config import PROJECT_ROOT, TrainConfig
from engine.training.rundir import ACTIVE_STATES, RunDir, new_run_id, process_start_time


def runner_command(run_dir: str | Path) -> list[str]:
    return [sys.executable, "-m", "engine.training", str(run_dir)]


def accelerate_command(run_dir: str | Path, num_processes: int) -> list[str]:
    """The multi-GPU launch: ``accelerate launch --num_processes N -m engine.training RUN_DIR``."""
    if num_processes < 1:
        raise TunedeckError(f"--num-processes must be at least 1 (got {num_processes}).")
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
            str(num_processes), "-m", "engine.training", str(run_dir)]


def _spawn(run: RunDir, command: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    # The runner must import this very checkout, whatever the caller's working directory.
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    with open(run.log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(PROJECT_ROOT), env=env,
                                start_new_session=True, close_fds=True)
    # Reap the child when it ends so a long-lived UI does not collect zombies.
    threading.Thread(target=proc.wait, daemon=True, name=f"reap-{proc.pid}").start()
    return proc


def _record_pid(run: RunDir, proc: subprocess.Popen) -> None:
    """The runner records its own pid as it starts; this covers a runner that dies on import.
    Read after the spawn, since the runner may already have written its status."""
    status = run.read_status()
    if not status.get("pid"):
        # With its start time, so that `stop` never signals a later process given this pid.
        run.write_status(status.get("state", "starting"), pid=proc.pid,
                         pid_start=process_start_time(proc.pid))


def create_run(config: TrainConfig, launcher: str = "python", num_processes: int = 1) -> RunDir:
    """A new run directory holding the resolved config and the "starting" status."""
    from engine.training.method_fit import fit_method

    config, _ = fit_method(config)  # the run records the method that trains, never `auto`
    resolved = config.resolved()
    root = paths.ensure_dir(paths.runs_dir())
    run = RunDir(root / new_run_id(config.name or config.method))
    run.path.mkdir(parents=True)
    run.config_path.write_text(resolved.to_yaml(), encoding="utf-8")
    run.write_status("starting", model=config.model, method=config.method, name=config.name,
                     started=time.time(), step=0, total_steps=None, error=None,
                     launcher=launcher, num_processes=num_processes)
    return run


def launch(config: TrainConfig, launcher: str = "python", num_processes: int = 1,
           check: bool = True) -> RunDir:
    """Create the run directory and start the detached runner; returns at once.

    `check=True` runs the pre-flight first and raises `TunedeckError` with its report when it
    finds a problem (a UI that has just shown the pre-flight passes False).
    """
    config.validate()
    if check:
        from engine.training.preflight import preflight

        report = preflight(config)
        if not report.ok:
            raise TunedeckError("Pre-flight failed:\n" + "\n".join(f"  - {e}" for e in report.errors))
    run = create_run(config, launcher, num_processes)
    command = (accelerate_command(run.path, num_processes) if launcher == "accelerate"
               else runner_command(run.path))
    _record_pid(run, _spawn(run, command))
    return run


def resume(run: RunDir) -> RunDir:
    """Relaunch a stopped or failed run from its newest complete checkpoint, appending to its
    events. The runner lock is held from the checks to the spawn, so two resumes at once start
    one runner; the new runner takes the lock over (runner.LOCK_WAIT)."""
    if not run.path.is_dir():
        raise TunedeckError(f"{run.path} is not a run directory.")
    lock = run.acquire_lock(wait=0.5)  # rides over a UI's momentary probe of the lock
    if lock is None:
        holder = run.lock_holder() or {}
        raise TunedeckError(
            f"Run {run.id} already has a runner (pid {holder.get('pid', '?')}, holding "
            f"{run.lock_path}), or is being resumed right now; stop it first "
            f"(tunedeck stop {run.id}).")
    try:
        _resume_locked(run)
    finally:
        run.release_lock(lock)
    return run


def _resume_locked(run: RunDir) -> None:
    status = run.read_status()
    state = run.state(status, lock_free=True)
    if state in ACTIVE_STATES:
        raise TunedeckError(f"Run {run.id} is still {state}; stop it first "
                            f"(tunedeck stop {run.id}).")
    if not run.config_path.is_file():
        raise TunedeckError(f"{run.path} has no config.yaml; it cannot be resumed.")
    checkpoint = run.latest_checkpoint(status)
    cut = [p.name for p in run.cut_checkpoints(status)]
    if checkpoint is None:
        detail = f" ({', '.join(cut)} cut short: not resumable)" if cut else ""
        raise TunedeckError(
            f"Run {run.id} has no complete checkpoint to resume from{detail}. Start it again "
            f"with: tunedeck train {run.config_path}")
    if status.get("state") == "done":
        raise TunedeckError(f"Run {run.id} has finished; there is nothing to resume.")
    status = run.write_status("starting", error=None, pid=None, resumed_from=checkpoint.name,
                              resumed=time.time(), cut_checkpoints=cut)
    if status.get("launcher") == "accelerate":
        command = accelerate_command(run.path, int(status.get("num_processes", 1)))
    else:
        command = runner_command(run.path)
    _record_pid(run, _spawn(run, command))


def stop(run: RunDir) -> bool:
    """SIGTERM → the runner checkpoints and ends "stopped". False if it was not running."""
    return run.stop()


def run_summary(run: RunDir) -> dict[str, Any]:
    """What a list of runs shows: id, state, model, method, progress, last losses, speed."""
    status = run.read_status()
    summary: dict[str, Any] = {
        "id": run.id, "state": run.state(), "model": status.get("model"),
        "method": status.get("method"), "step": status.get("step") or 0,
        "total_steps": status.get("total_steps"), "started": status.get("started"),
        "last_loss": None, "eval_loss": None, "tokens_per_s": None, "error": status.get("error"),
    }
    if summary["state"] == "failed" and not summary["error"] \
            and status.get("state") != "failed":
        summary["error"] = ("the runner ended without recording why: it was killed, or it "
                            f"could not write {run.status_path.name}; see {run.log_path}")
    if summary["model"] is None and run.config_path.is_file():
        try:
            config = TrainConfig.from_yaml(run.config_path)
            summary["model"], summary["method"] = config.model, config.method
        except TunedeckError:
            pass
    for event in run.read_events():
        kind = event.get("type")
        if kind == "log":
            summary["last_loss"] = event.get("loss")
            summary["tokens_per_s"] = event.get("tokens_per_s") or summary["tokens_per_s"]
            summary["step"] = max(summary["step"], event.get("step") or 0)
        elif kind == "eval":
            summary["eval_loss"] = event.get("eval_loss")
        elif kind == "state" and event.get("error"):
            summary["error"] = event["error"]
    return summary

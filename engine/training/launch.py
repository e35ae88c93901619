"""Starting, resuming and stopping runs from any front end.

A run is a detached child process (its own session: it outlives the TUI and the SSH connection)
whose output goes to train.log — never a pipe that nobody drains. Everything a UI learns about a
run comes from the run directory. Several processes start through ``accelerate launch``
(`engine.training.accelerate_launch`): the options are recorded with the run, so `resume`
starts it the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import paths
from engine.errors import TunedeckError
from engine.training.accelerate_launch import LaunchOptions
from engine.training.config import PROJECT_ROOT, TrainConfig
from engine.training.rundir import (
    ACTIVE_STATES,
    RunDir,
    new_run_id,
    process_start_time,
    same_process,
)

if TYPE_CHECKING:
    from engine.training.preflight_checks import PreflightReport

# Seconds `resume` waits for the last launch's accelerate launcher to end.
LAUNCHER_WAIT = 15.0


def runner_command(run_dir: str | Path) -> list[str]:
    return [sys.executable, "-m", "engine.training", str(run_dir)]


def accelerate_command(run_dir: str | Path, launch: int | LaunchOptions) -> list[str]:
    """The multi-process launch, ``accelerate launch --num_processes N … -m engine.training
    RUN_DIR``, for a number of processes or whole launch options."""
    options = launch if isinstance(launch, LaunchOptions) else LaunchOptions("accelerate", launch)
    return options.command(run_dir)


def _options(launcher: str, num_processes: int, options: LaunchOptions | None) -> LaunchOptions:
    if options is not None:
        return options
    return LaunchOptions() if launcher != "accelerate" else LaunchOptions("accelerate",
                                                                          num_processes)


def preflight_launch(config: TrainConfig, options: LaunchOptions | None = None,
                     progress: Callable[[str], None] | None = None) -> PreflightReport:
    """The recipe's pre-flight for `config` run with `options`: the processes, the global
    batch and the steps they make, and the launch's own errors (`check_launch`)."""
    from engine.training.accelerate_launch import check_launch
    from engine.training.preflight import preflight
    from engine.training.preflight_checks import set_world

    options = options or LaunchOptions()
    report = preflight(config, progress)
    set_world(report, config, options.num_processes, options.describe())
    try:
        errors, warnings = check_launch(options, config)
    except TunedeckError as err:  # the accelerate config file went bad since it was chosen
        errors, warnings = [str(err)], []
    report.errors += errors
    report.warnings += warnings
    report.ok = report.ok and not errors
    return report


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


def create_run(config: TrainConfig, launcher: str = "python", num_processes: int = 1,
               options: LaunchOptions | None = None) -> RunDir:
    """A new run directory holding the resolved config and the "starting" status, with how
    its processes start (`options`; else `launcher` and `num_processes`)."""
    from engine.training.method_fit import fit_method

    options = _options(launcher, num_processes, options)
    config, _ = fit_method(config)  # the run records the method that trains, never `auto`
    resolved = config.resolved()
    root = paths.ensure_dir(paths.runs_dir())
    run = RunDir(root / new_run_id(config.name or config.method))
    run.path.mkdir(parents=True)
    run.config_path.write_text(resolved.to_yaml(), encoding="utf-8")
    run.write_status("starting", model=config.model, method=config.method, name=config.name,
                     started=time.time(), step=0, total_steps=None, error=None,
                     launcher=options.launcher, num_processes=options.num_processes,
                     launch=options.to_status())
    return run


def launch(config: TrainConfig, launcher: str = "python", num_processes: int = 1,
           check: bool = True, options: LaunchOptions | None = None) -> RunDir:
    """Create the run directory and start the detached runner; returns at once. `options`
    (else `launcher` and `num_processes`): how its processes start.

    `check=True` runs the pre-flight first (it validates the config) and raises
    `TunedeckError` with its report when it finds a problem. A UI that has just shown the
    pre-flight passes False: then only the settings are checked again (milliseconds), not the
    device (the 4-bit probe) nor the data.
    """
    options = _options(launcher, num_processes, options)
    if check:
        report = preflight_launch(config, options)
        if not report.ok:
            raise TunedeckError("Pre-flight failed:\n" + "\n".join(f"  - {e}" for e in report.errors))
    else:
        config.validate(device_checks=False)
    options.command("RUN_DIR")  # a bad accelerate config fails here, before the run exists
    run = create_run(config, options=options)
    _record_pid(run, _spawn(run, options.command(run.path)))
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
    _wait_for_previous_launcher(run, status)
    try:
        command = LaunchOptions.from_status(status).command(run.path)
    except TunedeckError as err:
        raise TunedeckError(f"Run {run.id} cannot be started the way it was: {err}") from None
    from engine.training.distributed import clear_failures

    clear_failures(run.path)
    run.write_status("starting", error=None, pid=None, launcher_pid=None,
                     launcher_pid_start=None, resumed_from=checkpoint.name, resumed=time.time(),
                     cut_checkpoints=cut)
    _record_pid(run, _spawn(run, command))


def _wait_for_previous_launcher(run: RunDir, status: dict[str, Any]) -> None:
    """The accelerate launcher of the last attempt ends a moment after its rank 0 does (it
    reaps the other ranks and reports their exits into train.log): a new launch meanwhile
    would interleave the two, and could meet a rank of the old one still ending."""
    pid, start = status.get("launcher_pid"), status.get("launcher_pid_start")
    deadline = time.monotonic() + LAUNCHER_WAIT
    while same_process(pid, start):
        if time.monotonic() >= deadline:
            raise TunedeckError(
                f"Run {run.id}: its last launch (accelerate, pid {pid}) is still ending; try "
                f"again in a moment, or end it (kill {pid}) if it hangs.")
        time.sleep(0.2)


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
        "world_size": status.get("world_size") or 1, "global_batch": status.get("global_batch"),
    }
    if summary["state"] == "failed" and not summary["error"] \
            and status.get("state") != "failed":
        from engine.training.distributed import rank_failures

        # Rank 0 may have been killed before it could record a failed rank's error (NCCL
        # waits on a dead peer until torchrun's agent kills the rest): the rank's note says it.
        peers = rank_failures(run.path)
        summary["error"] = "; ".join(f"rank {r} failed: {text}" for r, text in peers) or (
            "the runner ended without recording why: it was killed, or it could not write "
            f"{run.status_path.name}; see {run.log_path}")
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
            if "reward" in event:  # GRPO: the mean reward of the step's sampled completions
                summary["reward"] = event.get("reward")
            summary["tokens_per_s"] = event.get("tokens_per_s") or summary["tokens_per_s"]
            summary["step"] = max(summary["step"], event.get("step") or 0)
        elif kind == "eval":
            summary["eval_loss"] = event.get("eval_loss")
        elif kind == "state" and event.get("error"):
            summary["error"] = event["error"]
    return summary

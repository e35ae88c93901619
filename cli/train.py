"""`tunedeck train`, `tunedeck runs`, `tunedeck stop`, `tunedeck resume`: fine-tuning runs, headless.

`train` starts a detached runner and returns at once; every other command reads the run
directory, so any of them can attach to any run at any time.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cli.console import console
from cli.listing import Column, add_format, emit
from engine.errors import TunedeckError


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="start a fine-tuning run (detached) from a config",
        description="Start a fine-tuning run from a YAML config, with key=value overrides. "
        "With no config, lists the example configs.")
    train.add_argument("config", nargs="?", help="a training config (.yaml)")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="settings that override the config, e.g. max_steps=20 lora_r=8")
    train.add_argument("--dry-run", action="store_true",
                       help="run the pre-flight only: tokens, masking, memory, steps, time")
    train.add_argument("--foreground", action="store_true",
                       help="train in this process (Ctrl-C stops with a checkpoint)")
    multi = train.add_argument_group(
        "several processes (docs/multi-gpu.md)",
        "Any of these starts the run with `accelerate launch` (its options in parentheses).")
    multi.add_argument("--launcher", choices=("python", "accelerate"), default=None,
                       help="python: one process (the default); accelerate: `accelerate launch`")
    multi.add_argument("--num-processes", type=int, default=None, metavar="N",
                       help="processes over all machines, one per GPU (--num_processes; "
                       "default: the accelerate config's, else one per GPU)")
    multi.add_argument("--accelerate-config", metavar="NAME|PATH",
                       help="an accelerate config (--config_file): a shipped one "
                       f"({', '.join(_shipped_names())}) or a file `accelerate config` wrote")
    multi.add_argument("--num-machines", type=int, metavar="N", help="(--num_machines)")
    multi.add_argument("--machine-rank", type=int, metavar="R",
                       help="this machine's rank, 0 … N-1 (--machine_rank)")
    multi.add_argument("--main-process-ip", metavar="IP",
                       help="machine rank 0's address (--main_process_ip)")
    multi.add_argument("--main-process-port", type=int, metavar="PORT",
                       help="its port (--main_process_port; default: a free one on one machine)")
    train.set_defaults(func=run_train)

    runs = subparsers.add_parser("runs", help="list training runs; show or watch one",
                                 description="List runs, or `runs show ID` / `runs watch ID`.")
    runs.add_argument("action", nargs="?", choices=("list", "show", "watch"), default="list")
    runs.add_argument("run_id", nargs="?", help="run id (or a unique part of it)")
    add_format(runs)
    runs.set_defaults(func=run_runs)

    stop = subparsers.add_parser("stop", help="stop a run (it checkpoints first)")
    stop.add_argument("run_id")
    stop.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait up to this long for the run to stop")
    stop.set_defaults(func=run_stop)

    resume = subparsers.add_parser("resume", help="resume a stopped or failed run from its "
                                   "newest checkpoint")
    resume.add_argument("run_id")
    resume.set_defaults(func=run_resume)


# --------------------------------------------------------------------------- train


def _load_config(args: argparse.Namespace) -> Any:
    from engine.training.config import TrainConfig

    overrides = list(args.overrides)
    if args.config and "=" in args.config and not Path(args.config).exists():
        overrides.insert(0, args.config)  # `tunedeck train max_steps=5`: defaults + overrides
        config = TrainConfig()
    else:
        config = TrainConfig.from_yaml(args.config)
    return config.with_overrides(overrides) if overrides else config


def list_example_configs() -> int:
    from engine.training.config import TrainConfig, example_configs

    out = console()
    found = example_configs()
    if not found:
        out.print("No example configs found. Write one (see README) and run "
                  "`tunedeck train CONFIG.yaml`.")
        return 1
    out.print("Example configs (start one with `tunedeck train PATH \\[key=value …]`):")
    for path in found:
        try:
            cfg = TrainConfig.from_yaml(path)
            detail = f"{cfg.method} on {cfg.dataset}, model {cfg.model}"
        except TunedeckError as err:
            detail = f"(invalid: {err})"
        out.print(f"  {path}  [dim]{detail}[/dim]")
    out.print("Try first: `tunedeck train PATH --dry-run` to see the pre-flight.")
    return 0


def _shipped_names() -> list[str]:
    from engine.training.accelerate_launch import accelerate_configs

    return [c.name for c in accelerate_configs()]


def launch_options(args: argparse.Namespace) -> Any:
    """The launch the command line asks for (`accelerate_launch.LaunchOptions`)."""
    from engine.training.accelerate_launch import LaunchOptions

    options = LaunchOptions.plan(args.launcher, args.num_processes, args.accelerate_config,
                                 args.num_machines, args.machine_rank, args.main_process_ip,
                                 args.main_process_port)
    if args.foreground and options.launcher == "accelerate":
        raise TunedeckError("--foreground trains in this one process; drop it to start the "
                            "processes with accelerate launch (detached, like any run).")
    return options


def run_train(args: argparse.Namespace) -> int:
    if not args.config and not args.overrides:
        return list_example_configs()
    from engine.training import launch as launcher

    config = _load_config(args)
    options = launch_options(args)
    out = console()
    if options.launcher == "accelerate" and args.dry_run:
        out.print("Launch command: " + " ".join(options.command("RUN_DIR")))
    report = launcher.preflight_launch(config, options,
                                       progress=lambda msg: out.print(f"[dim]{msg}[/dim]"))
    if args.dry_run:
        print(report.text())
        return 0 if report.ok else 1
    if not report.ok:
        print(report.text())
        raise TunedeckError("Pre-flight failed; nothing was started. Fix the errors above.")
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}")
    if args.foreground:
        from engine.training.runner import main as runner_main

        run = launcher.create_run(config)
        out.print(f"Run {run.id}: training in the foreground (Ctrl-C stops with a checkpoint).")
        code = runner_main(run.path)
        out.print(f"Run {run.id}: {run.state()}. Events: {run.events_path}")
        return code
    run = launcher.launch(config, check=False, options=options)
    status = run.read_status()
    method = status.get("method") or config.method  # `auto` resolved when the run was made
    out.print(f"Started run {run.id} (pid {status.get('pid')}): {method} of "
              f"{config.model}, {report.steps} steps.")
    if options.launcher == "accelerate":
        out.print(f"Processes: {options.num_processes}; {report.batch_detail}")
        out.print("Command: " + " ".join(options.command(run.path)))
        if options.num_machines > 1:
            out.print("Start the same command on every other machine with its own "
                      "--machine_rank (the run directory at this path on each).")
    out.print(f"Watch it:  tunedeck runs watch {run.id}")
    out.print(f"Stop it:   tunedeck stop {run.id}      (log: {run.log_path})")
    return 0


# --------------------------------------------------------------------------- runs


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M") if epoch else "-"


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def run_runs(args: argparse.Namespace) -> int:
    from engine.training.rundir import open_run

    action = args.action
    if action == "list":
        if not args.run_id:
            return list_runs(args.list_format)
        action = "show"  # `tunedeck runs ID` reads as `runs show ID`
    if not args.run_id:
        raise TunedeckError(f"`tunedeck runs {args.action}` needs a run id; "
                            "`tunedeck runs` lists them.")
    run = open_run(args.run_id)
    if action == "show" and args.list_format == "json":
        from engine.training.launch import run_summary

        return emit([run_summary(run) | {"path": str(run.path)}], RUN_COLUMNS, fmt="json",
                    title="", empty="")
    return show_run(run) if action == "show" else watch_run(run)


RUN_COLUMNS = [
    Column("id", "id", key_column=True),
    Column("state", "state"),
    Column("step", "progress"),
    # A GRPO run's loss says little: its mean reward (R 0.62) is shown instead.
    Column("last loss", "shown_loss", drop=3),
    Column("method", "method", drop=2),
    Column("model", "model", shrink=True, drop=4),
    Column("started", "started", show=_when, drop=1),
]


def list_runs(fmt: str = "table") -> int:
    from engine import paths
    from engine.training.launch import run_summary
    from engine.training.rundir import list_runs as all_runs

    records = []
    for run in all_runs():
        s = run_summary(run)
        s["progress"] = f"{s['step']}/{s['total_steps'] or '?'}"
        s["shown_loss"] = (f"R {s['reward']:.2f}" if isinstance(s.get("reward"), (int, float))
                           else _fmt(s["last_loss"]))
        records.append(s)
    return emit(records, RUN_COLUMNS, fmt=fmt, title="Runs",
                empty=f"No runs yet under {paths.runs_dir()}. Start one with `tunedeck train`.")


def show_run(run: Any) -> int:
    from engine.training.launch import run_summary

    s = run_summary(run)
    out = console()
    out.print(f"Run {s['id']}: [bold]{s['state']}[/bold]")
    out.print(f"  model {s['model']}, method {s['method']}, started {_when(s['started'])}")
    out.print(f"  step {s['step']}/{s['total_steps'] or '?'}, last loss {_fmt(s['last_loss'])}, "
              f"eval loss {_fmt(s['eval_loss'])}, tokens/s {_fmt(s['tokens_per_s'], '.1f')}")
    if s.get("reward") is not None:
        out.print(f"  mean reward {_fmt(s['reward'], '.3f')} (GRPO)")
    if s["world_size"] > 1:
        out.print(f"  {s['world_size']} processes, global batch {s['global_batch'] or '?'}")
    if s["error"]:
        out.print(f"  [red]error:[/red] {s['error']}")
    cut = set(run.cut_checkpoints())
    names = [p.name + (" (cut short: not resumable)" if p in cut else "") for p in run.checkpoints()]
    out.print(f"  checkpoints: {', '.join(names) or 'none'}")
    if run.adapter_dir.is_dir():
        out.print(f"  adapter: {run.adapter_dir}")
    out.print(f"  directory: {run.path}")
    samples = [e for e in run.read_events() if e.get("type") == "sample"]
    if samples:
        last = samples[-1]
        out.print(f"  last sample (step {last['step']}):")
        out.print(f"    prompt:     {_short(last.get('prompt'))}")
        out.print(f"    reference:  {_short(last.get('reference'))}")
        out.print(f"    completion: {_short(last.get('completion'))}")
    return 0


def _short(text: Any, width: int = 100) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_event(event: dict[str, Any]) -> str:
    """One event as one line of the text view."""
    kind = event.get("type")
    step = event.get("step", "-")
    if kind == "log":
        rate = event.get("tokens_per_s")
        return (f"step {step:>5}  loss {_fmt(event.get('loss'))}  lr {_fmt(event.get('lr'), '.2e')}"
                f"  {_fmt(rate, '.1f')} tok/s  {_fmt(event.get('mem_mb'), '.0f')} MB")
    if kind == "eval":
        return f"step {step:>5}  eval loss {_fmt(event.get('eval_loss'))}"
    if kind == "sample":
        return (f"step {step:>5}  sample: {_short(event.get('prompt'), 60)}\n"
                f"             → {_short(event.get('completion'), 80)}\n"
                f"             (reference: {_short(event.get('reference'), 60)})")
    if kind == "state":
        error = f": {event['error']}" if event.get("error") else ""
        return f"state {event.get('state')}{error}"
    return str(event)


def watch_run(run: Any, poll: float = 0.5, follow: bool = True) -> int:
    """Print the run's history, then follow new events until the run ends (Ctrl-C detaches)."""
    from engine.training.rundir import EventCursor

    cursor = EventCursor()
    print(f"Run {run.id} ({run.state()}); Ctrl-C stops watching, not the run.", flush=True)
    try:
        while True:
            for event in run.read_events(cursor):
                print(format_event(event), flush=True)
            if not follow or not run.is_active():
                for event in run.read_events(cursor):
                    print(format_event(event), flush=True)
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        print(f"\nStopped watching; run {run.id} goes on.")
        return 0
    print(f"Run {run.id}: {run.state()}")
    return 0


# --------------------------------------------------------------------------- stop / resume


def run_stop(args: argparse.Namespace) -> int:
    from engine.training.launch import stop
    from engine.training.rundir import open_run

    run = open_run(args.run_id)
    if not stop(run):
        console().print(f"Run {run.id} is not running ({run.state()}).")
        return 1
    if args.wait:
        deadline = time.monotonic() + args.wait
        while run.is_active() and time.monotonic() < deadline:
            time.sleep(0.2)
    console().print(f"Run {run.id}: {run.state()} (it saves a checkpoint before it ends; "
                    f"resume with `tunedeck resume {run.id}`).")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    from engine.training.launch import resume
    from engine.training.rundir import open_run

    run = resume(open_run(args.run_id))
    status = run.read_status()
    cut = status.get("cut_checkpoints") or []
    if cut:
        console().print(f"{', '.join(cut)} was cut short (disk full or killed while saving); "
                        "resuming from the newest complete checkpoint instead.")
    console().print(f"Resumed run {run.id} from {status.get('resumed_from')}. "
                    f"Watch it: tunedeck runs watch {run.id}")
    return 0

"""`tunedeck gpu-check`: the whole training path on this machine's NVIDIA GPU, as one table.

Progress goes to stderr, the table to stdout, the JSON to `--output` (default: the check's run
directory). Exit codes: 0 passed (and: no CUDA GPU, said so), 1 a check failed, 3 no CUDA GPU with --require-gpu,
130 interrupted — docs/gpu-check.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.formatting import duration

JSON_NAME = "gpu-check.json"
MARKS = {"ok": "[green]✓ ok[/]", "warn": "[yellow]! warn[/]", "failed": "[red]✗ failed[/]",
         "skipped": "[dim]– skipped[/]"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gpu-check", help="check the training path on an NVIDIA GPU (one command, ≤ 10 min)",
        description="Probe CUDA, bf16 and 4-bit; train the shipped QLoRA recipe "
        "(configs/sql.yaml) as a real run; compare its tokens/s and peak memory with a plain "
        "transformers.Trainer + PEFT; merge the adapter; evaluate base vs adapter vs merged on "
        "held-out SQL. Prints one table and writes it as JSON.")
    p.add_argument("--model", "-m", default=None,
                   help="base model (default: the recipe's, smollm2-135m-instruct)")
    p.add_argument("--steps", type=int, default=200, help="training steps of the run (200)")
    p.add_argument("--bench-steps", type=int, default=30,
                   help="steps of each side of the throughput comparison (30; the first is "
                   "not timed)")
    p.add_argument("--eval-limit", type=int, default=40,
                   help="held-out examples per evaluated model (40)")
    p.add_argument("--split", default="test", choices=("test", "heldout", "validation"),
                   help="the held-out split of sample_data/text_to_sql (test)")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help=f"write the JSON here (default: RUN_DIR/{JSON_NAME})")
    p.add_argument("--force", action="store_true", help="replace an existing --output file")
    p.add_argument("--require-gpu", action="store_true",
                   help="exit 3, not 0, on a machine without a CUDA GPU (for scripts)")
    # The check's own tests run it on a CPU: the real steps, no GPU numbers.
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.gpu_check import Options

    options = Options(model=args.model, steps=args.steps, bench_steps=args.bench_steps,
                      eval_limit=args.eval_limit, split=args.split, device=args.device)
    options.validate()
    output = None
    if args.output is not None:  # refused now, not after ten minutes of work
        from engine.safe_write import check_target

        output = check_target(args.output, force=args.force, default_name=JSON_NAME,
                              what="--output")
    with _cpu_only(args.device == "cpu"):
        report, ctx = _check(options)
    _print(report)
    path = output or _default_output(report, ctx)
    if path is not None:
        from engine.safe_write import output_file

        with output_file(path) as fh:
            fh.write(report.to_json(args.require_gpu))
        print(f"JSON: {path}")
    return report.exit_code(args.require_gpu)


def _check(options: Any) -> tuple[Any, Any]:
    from engine.gpu_check import run_check

    err = sys.stderr.isatty()

    def say(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    def on_row(row: Any) -> None:
        if err or row.result != "skipped":
            print(f"{row.check}: {row.result} ({duration(row.seconds)})", file=sys.stderr,
                  flush=True)

    return run_check(options, say=say, on_row=on_row)


@contextlib.contextmanager
def _cpu_only(on: bool) -> Iterator[None]:
    """`--device cpu` hides the GPUs from this process and the runner it starts (the variable
    is read when CUDA first initialises, which nothing before the check does)."""
    if not on:
        yield
        return
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _default_output(report: Any, ctx: Any) -> Path | None:
    """The run directory's gpu-check.json; without a run, ./gpu-check.json unless it exists.
    Nothing when there is no GPU: the table already says all there is."""
    if ctx.run is not None:
        return ctx.run.path / JSON_NAME
    if report.no_gpu:
        return None
    target = Path.cwd() / JSON_NAME
    if target.exists():
        print(f"{target} exists; the JSON was not written (give --output PATH).")
        return None
    return target


def _print(report: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    from cli.console import console

    out = console()
    table = Table(title=f"tunedeck gpu-check ({duration(report.seconds)})",
                  title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("value / detail", overflow="fold")
    for row in report.rows:
        table.add_row(row.check, MARKS[row.result], Text(row.value))  # no markup
    out.print(table)
    if report.no_gpu:
        # Plain print: one unwrapped line that a script (or grep) finds whole.
        print(report.row("device").value)
        print("Nothing past the device probe ran (exit code 0; --require-gpu makes it 3).")
    elif report.interrupted:
        out.print("Interrupted; the rows above say how far it got.")
    elif report.failed:
        out.print(f"[red]{len(report.failed)} check(s) failed:[/] "
                  + "; ".join(r.check for r in report.failed))
    else:
        out.print("[green]Every check passed[/] (warnings above, if any, say what to look at).")

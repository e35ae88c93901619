"""The check's steps in order, and the report they make: one row per step, never a traceback.

A step is a function of the shared `Context` that returns an `Outcome` or raises; `run_steps`
turns a raise into a "failed" row with the error's one-line message, and marks every later step
that needs a failed (or itself skipped) one "skipped", naming what it waited for. So one
broken piece — a GPU without 4-bit kernels, say — still leaves a table that says what does work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import describe_failure

RESULTS = ("ok", "warn", "failed", "skipped")
# Exit codes of `tunedeck gpu-check` (docs/gpu-check.md): a script can tell "this machine has no
# GPU" apart from "the GPU check ran and something is broken".
EXIT_OK = 0  # every step ok or warn
EXIT_FAILED = 1  # at least one step failed
EXIT_NO_GPU = 3  # no CUDA GPU and --require-gpu: nothing past the device probe ran
EXIT_INTERRUPTED = 130  # Ctrl-C, as every tunedeck command
SCHEMA = 1  # of the JSON report; raised when a field changes meaning


@dataclass
class Outcome:
    """What a step found: its result, one line for the table and the numbers behind it."""

    result: str
    value: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    check: str
    result: str
    value: str
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "result": self.result, "value": self.value,
                "seconds": round(self.seconds, 2), "data": self.data}


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Any], Outcome]
    needs: tuple[str, ...] = ()


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # options, versions, run directory
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    interrupted: bool = False

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.check == name), None)

    @property
    def no_gpu(self) -> bool:
        """The device probe found no CUDA GPU (as opposed to a GPU that fails a check)."""
        device = self.row("device")
        return device is not None and device.result == "failed" \
            and device.data.get("cuda_available") is False

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.result == "failed"]

    def verdict(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.no_gpu:
            return "no-gpu"
        return "failed" if self.failed else "passed"

    def exit_code(self, require_gpu: bool = False) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.no_gpu:  # said so, cleanly; a script that needs the GPU asks for 3
            return EXIT_NO_GPU if require_gpu else EXIT_OK
        return EXIT_FAILED if self.failed else EXIT_OK

    def as_dict(self, require_gpu: bool = False) -> dict[str, Any]:
        return {"schema": SCHEMA,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
                "seconds": round(self.seconds, 1), "verdict": self.verdict(),
                "exit_code": self.exit_code(require_gpu), **self.info,
                "rows": [r.as_dict() for r in self.rows]}

    def to_json(self, require_gpu: bool = False) -> str:
        return json.dumps(self.as_dict(require_gpu), indent=2, ensure_ascii=False,
                          default=str) + "\n"


def run_steps(steps: list[Step], ctx: Any, report: Report | None = None,
              on_row: Callable[[Row], None] | None = None) -> Report:
    """Run `steps` in order on `ctx`; each becomes a row of the report. Ctrl-C ends the step
    in flight as "failed: interrupted", the rest "skipped", and the report says interrupted."""
    report = report or Report()
    started = time.perf_counter()
    by_name: dict[str, Row] = {}
    for step in steps:
        blocked = [n for n in step.needs if n in by_name and by_name[n].result in
                   ("failed", "skipped")]
        if report.interrupted:
            row = Row(step.name, "skipped", "not run: the check was interrupted")
        elif blocked:
            row = Row(step.name, "skipped", "needs " + ", ".join(
                f"{n} ({by_name[n].result})" for n in blocked))
        else:
            row = _run_one(step, ctx)
            report.interrupted = row.data.get("interrupted", False)
        by_name[step.name] = row
        report.rows.append(row)
        if on_row:
            on_row(row)
    report.seconds = time.perf_counter() - started
    return report


def _run_one(step: Step, ctx: Any) -> Row:
    t0 = time.perf_counter()
    try:
        outcome = step.run(ctx)
    except KeyboardInterrupt:
        return Row(step.name, "failed", "interrupted (Ctrl-C)", time.perf_counter() - t0,
                   {"interrupted": True})
    except Exception as err:  # every failure is a row the user reads, never a traceback
        return Row(step.name, "failed", describe_failure(err), time.perf_counter() - t0,
                   {"error_type": type(err).__name__})
    if outcome.result not in RESULTS:
        raise ValueError(f"step {step.name} returned result {outcome.result!r}")
    return Row(step.name, outcome.result, outcome.value, time.perf_counter() - t0, outcome.data)

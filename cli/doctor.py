"""`tunedeck doctor`: what this machine can do, measured rather than guessed."""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
from importlib import metadata

from cli.console import console
from engine.formatting import human_bytes

PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate",
            "textual")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check Python, torch, the device, 4-bit support, "
                                   "the data home and free disk")
    parser.set_defaults(func=run)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect() -> list[tuple[str, str, str]]:
    """(check, value, verdict) rows; verdict is "ok", "warn" or "fail"."""
    from engine import models, paths

    rows: list[tuple[str, str, str]] = []
    rows.append(("python", f"{platform.python_version()} ({sys.executable})", "ok"))
    rows.append(("platform", f"{platform.system()} {platform.machine()}", "ok"))
    for name in PACKAGES:
        version = _version(name)
        rows.append((name, version, "fail" if version == "not installed" else "ok"))
    try:
        import torch

        policy = models.device_policy()
        rows.append(("device", policy.device, "ok"))
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            rows.append(("cuda", f"{torch.version.cuda}, {torch.cuda.device_count()} GPU(s): "
                         f"{props.name}, {human_bytes(props.total_memory)}", "ok"))
            rows.append(("bf16", "supported" if policy.bf16_supported else "not supported (fp16)",
                         "ok" if policy.bf16_supported else "warn"))
        else:
            rows.append(("cuda", "not available: training and generation run on the CPU",
                         "warn"))
        rows.append(training_precision(policy))
        rows.append(("compute dtype", f"{policy.dtype_name} (loading and generation)", "ok"))
        rows.append(("cpu threads", str(torch.get_num_threads()), "ok"))
        works, reason = models.probe_4bit(policy.device)
        rows.append(("4-bit (QLoRA)", ("works: " if works else "unavailable: ") + reason,
                     "ok" if works else "warn"))
    except ImportError as err:
        rows.append(("torch", f"does not import: {err}", "fail"))
    try:
        gguf = models.default_gguf_path()
        cached = models.is_cached(models.resolve(models.DEFAULT_MODEL))
        rows.append(("default model", f"{models.DEFAULT_MODEL}: {gguf.name} "
                     f"({'converted cache ready' if cached else 'converted on first use'})", "ok"))
    except Exception as err:
        rows.append(("default model", str(err), "fail"))
    home = paths.home()
    rows.append(("data home", str(home) + ("" if home.exists() else " (created on first use)"),
                 "ok"))
    probe = home if home.exists() else next((p for p in home.parents if p.exists()), home.anchor)
    free = shutil.disk_usage(probe).free
    rows.append(("free disk", f"{human_bytes(free)} at {probe}", "ok" if free > 5 * 2**30 else "warn"))
    return rows


def training_precision(policy: object) -> tuple[str, str, str]:
    """The precision a run with `precision: auto` trains in here, decided by the runner's own
    code (on a CPU it measures bf16 against fp32), so doctor and train.log say the same."""
    from engine.training.config import TrainConfig
    from engine.training.preflight_checks import describe_precision
    from engine.training.shared import mixed_precision

    precision, why = mixed_precision(TrainConfig(precision="auto"), policy.device,  # type: ignore[attr-defined]
                                     policy.dtype_name)  # type: ignore[attr-defined]
    return ("training precision", f"{describe_precision(precision)} with precision: auto "
            f"({why})", "ok")


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    out = console()
    with out.status("Checking this machine (tries a 4-bit matmul)…"):
        rows = collect()
    table = Table(title="tunedeck doctor", title_justify="left")
    table.add_column("check")
    table.add_column("value", overflow="fold")
    table.add_column("", justify="center")
    marks = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}
    for check, value, verdict in rows:
        table.add_row(check, value, marks[verdict])
    out.print(table)
    failed = [r for r in rows if r[2] == "fail"]
    if failed:
        out.print(f"[red]{len(failed)} problem(s):[/] " + "; ".join(f"{c}: {v}" for c, v, _ in failed))
    return 1 if failed else 0

"""`tunedeck models`: the models available on this machine."""

from __future__ import annotations

import argparse

from tui.commands._common import console, human_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the models available on this machine")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from engine import models, paths

    entries = models.available_models()
    out = console()
    if not entries:
        out.print(f"No models found. Install the default one with: {models.DEFAULT_INSTALL}")
        return 1
    table = Table(title="Models", title_justify="left")
    for column in ("name", "kind", "size", "cached", "location"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        name = f"{entry.name} (default)" if entry.default else entry.name
        table.add_row(name, entry.kind, human_bytes(entry.size_bytes),
                      "yes" if entry.cached else "no (converted on first use)", entry.location)
    out.print(table)
    out.print(f"Data home: {paths.home()}. Also usable: a folder with config.json, a .gguf file, "
              "or a Hugging Face hub id (when online).")
    return 0

"""`tunedeck models`: the models available on this machine."""

from __future__ import annotations

import argparse

from cli.listing import Column, add_format, emit
from engine.formatting import human_bytes

COLUMNS = [
    Column("name", "label", key_column=True),
    Column("kind", "kind", drop=2),
    Column("size", "size_bytes", show=human_bytes, drop=3),
    Column("cached", "cached", show=lambda v: "yes" if v else "no (converted on first use)",
           drop=4),
    Column("location", "location", key_column=True),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the models available on this machine")
    add_format(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from engine import model_catalog, models, paths

    entries = model_catalog.available_models()
    if not entries and args.list_format == "table":
        print(f"No models found. Install the default one with: {models.DEFAULT_INSTALL}")
        return 1
    records = [asdict(e) | {"label": f"{e.name} (default)" if e.default else e.name}
               for e in entries]
    if args.list_format == "json":
        for record in records:
            record.pop("label")
    emit(records, COLUMNS, fmt=args.list_format, title="Models", empty="",
         footer=f"Data home: {paths.home()}. Also usable: a folder with config.json, a .gguf "
         "file, or a Hugging Face hub id (when online).")
    return 0

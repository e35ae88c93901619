"""The `tunedeck` command: no arguments opens the TUI; subcommands call the engine headless.

Each subcommand lives in a module under ``cli/`` exposing ``register(subparsers)``, which
adds its parser and sets ``func`` (called with the parsed args, returning an exit code). Headless
subcommands never import textual; heavy libraries load inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys

from engine import __version__
from engine.errors import TunedeckError, describe_failure

# One module per command group; order is the order in `tunedeck --help`.
COMMAND_MODULES = [
    "cli.models",
    "cli.doctor",
    "cli.gpu_check",
    "cli.data",
    "cli.prompt",
    "cli.ratings",
    "cli.train",
    "cli.export",
    "cli.eval",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunedeck",
        description="A keyboard-driven terminal workbench for adapting a local LLM to a task. "
        "With no command, opens the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"tunedeck {__version__}")
    parser.add_argument("--model", default=None,
                        help="model for the TUI (default: smollm2-135m-instruct)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is not None:
        from engine.console import plain_progress_when_piped

        plain_progress_when_piped()
    if args.command is None:
        from tui.app import run_app

        return run_app(model=args.model)
    from engine.safe_write import clean_data_home

    clean_data_home()  # temporary files a killed write left behind
    try:
        return int(args.func(args) or 0)
    except TunedeckError as err:
        print(f"tunedeck: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tunedeck: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # OS and database errors, and anything unforeseen: no traceback
        if os.environ.get("TUNEDECK_DEBUG"):
            raise
        hint = "" if isinstance(err, (OSError, sqlite3.Error, RecursionError, UnicodeError)) \
            else " (TUNEDECK_DEBUG=1 shows the traceback)"
        print(f"tunedeck: {describe_failure(err)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

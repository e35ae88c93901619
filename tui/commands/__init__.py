"""Headless subcommands of `tunedeck`, one module per command group (see tui/cli.py)."""

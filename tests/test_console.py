"""Progress bars written to a file or a pipe come out as plain lines, not carriage returns."""

from __future__ import annotations

import io
import subprocess
import sys

BARS = ("from tqdm import tqdm\n"
        "for _ in tqdm(range(3000), mininterval=0, miniters=1):\n"
        "    pass\n")


def _stderr_of(code: str) -> bytes:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, cwd=str(_root()))
    assert done.returncode == 0, done.stderr.decode()
    return done.stderr


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_tqdm_into_a_pipe_writes_carriage_returns_without_the_switch():
    assert _stderr_of(BARS).count(b"\r") > 100


def test_plain_progress_when_piped_silences_the_bars():
    code = ("from engine.console import plain_progress_when_piped\n"
            "assert plain_progress_when_piped()\n" + BARS)
    assert b"\r" not in _stderr_of(code)


def test_a_terminal_keeps_its_bars(monkeypatch):
    from engine.console import plain_progress_when_piped

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert plain_progress_when_piped(Tty()) is False
    import os

    assert "TQDM_DISABLE" not in os.environ


def test_the_cli_switches_bars_off_when_stderr_is_piped(monkeypatch, capsys):
    import os

    from cli.main import main

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert main(["train"]) == 0  # lists the example configs
    assert os.environ.get("TQDM_DISABLE") == "1"
    monkeypatch.delenv("TQDM_DISABLE", raising=False)

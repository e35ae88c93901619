"""The engine never pulls in the TUI stack; the TUI never pulls in the ML stack to start."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "trl", "accelerate")


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _engine_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
    return [n for n in names if not n.endswith("__main__")]


def test_engine_never_imports_textual_or_rich():
    modules = _engine_modules()
    assert "engine.models" in modules
    loaded = _modules_after("\n".join(f"import {m}" for m in modules))
    assert not {m for m in loaded if m.split(".")[0] in ("textual", "rich")}


def test_tui_app_and_cli_import_no_ml_stack():
    loaded = _modules_after("import tui.app\nimport tui.cli\ntui.cli.build_parser()")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_headless_cli_imports_no_textual():
    loaded = _modules_after("import tui.cli\ntui.cli.build_parser()")
    assert not {m for m in loaded if m.split(".")[0] == "textual"}


def test_first_frame_imports_no_ml_stack():
    code = """
import asyncio, sys
from tui.app import TunedeckApp

async def main():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.query("Footer"), "no first frame"

asyncio.run(main())
"""
    loaded = _modules_after(code)
    assert "textual" in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}

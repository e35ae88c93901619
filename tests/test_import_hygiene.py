"""The engine never pulls in the TUI stack; the TUI never pulls in the ML stack to start."""

from __future__ import annotations

import ast
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


# Modules that exist only inside the training process: they subclass TRL / transformers / torch
# classes, so importing them is importing the ML stack (and TRL itself imports rich). Nothing
# outside the runner imports them at module level.
RUNNER_ONLY = {"engine.training.trainers", "engine.training.callbacks", "engine.training.guards",
               "engine.training.tensorboard", "engine.training.dropout"}


def _engine_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
    return [n for n in names if not n.endswith("__main__")]


def test_engine_source_never_imports_textual_or_rich():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("textual", "rich")]
    assert not offenders


def _imports(folder: str) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(path.relative_to(ROOT).as_posix(), node.lineno, a.name)
                          for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((path.relative_to(ROOT).as_posix(), node.lineno, node.module))
    return found


def test_headless_cli_reaches_the_tui_only_to_open_it():
    """The CLI package sits beside the TUI: its one way in is `tunedeck` with no command."""
    reached = [(f, n, m) for f, n, m in _imports("cli") if m.split(".")[0] in ("tui", "textual")]
    assert [(f, m) for f, _, m in reached] == [("cli/main.py", "tui.app")]


def test_tui_never_imports_the_cli():
    assert not [i for i in _imports("tui") if i[2].split(".")[0] == "cli"]


def test_engine_modules_import_light():
    """Importing any engine module (but the runner-only ones) pulls in neither the TUI stack nor
    the ML stack: heavy imports live inside the functions that need them."""
    modules = [m for m in _engine_modules() if m not in RUNNER_ONLY]
    assert "engine.models" in modules and "engine.training.runner" in modules
    loaded = _modules_after("\n".join(f"import {m}" for m in modules))
    assert not {m for m in loaded if m.split(".")[0] in ("textual", "rich")}
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_tui_app_and_cli_import_no_ml_stack():
    loaded = _modules_after("import tui.app\nimport cli.main\ncli.main.build_parser()")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_headless_cli_imports_no_textual():
    loaded = _modules_after("import cli.main\ncli.main.build_parser()")
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


def test_the_ratings_names_load_without_the_ratings_store():
    # The CLI's parser takes the rating sources from the schema; the package's store, exports
    # and A/B code load on first use, and are the same objects then.
    loaded = _modules_after("import cli.ratings")
    assert "engine.ratings.schema" in loaded
    assert not {"engine.ratings.store", "engine.ratings.export", "engine.ratings.ab",
                "engine.store"} & loaded
    from engine import ratings
    from engine.ratings.store import RatingStore

    assert ratings.RatingStore is RatingStore

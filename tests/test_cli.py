"""`tunedeck` headless commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert capsys.readouterr().out.startswith("tunedeck ")


def test_models_lists_default(default_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "default" in out


def test_doctor_prints_real_values(capsys):
    from cli import doctor

    rows = {check: value for check, value, _ in doctor.collect()}
    assert rows["device"] == "cpu"
    assert rows["compute dtype"].startswith("float32")
    assert rows["4-bit (QLoRA)"].startswith(("works", "unavailable"))
    assert "GB" in rows["free disk"] or "MB" in rows["free disk"]
    assert main(["doctor"]) == 0
    assert "4-bit (QLoRA)" in capsys.readouterr().out


def test_unknown_model_in_subprocess_is_one_line_no_traceback():
    code = ("import sys\nfrom cli.main import main\nfrom engine import models\n"
            "from engine.errors import TunedeckError\n"
            "try:\n    models.resolve('bogus-model')\n"
            "except TunedeckError as e:\n    print(e, file=sys.stderr); sys.exit(1)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "Unknown model 'bogus-model'" in out.stderr

"""List commands: run ids whole on one line (piped, at 80 and at 60 columns), columns left out
instead of wrapped on narrow terminals, and ``--format json`` for scripts."""

from __future__ import annotations

import json

import pytest
from adapter_runs import make_run

from cli import listing
from cli.main import main
from engine import paths

LONG_MODEL = "/srv/models/a-very-long-folder-name/HuggingFaceTB-SmolLM2-135M-Instruct-local-copy"


@pytest.fixture
def runs(tmp_path):
    """Three finished runs without adapters (no model is loaded), on a long model path."""
    made = [make_run(tmp_path, name=f"sql-qlora-{n}", final=False) for n in range(3)]
    for run in made:
        run.write_status("done", model=LONG_MODEL, method="qlora", total_steps=40, step=40,
                         started=1_700_000_000.0, finished=1_700_000_060.0)
    return made


def _terminal(monkeypatch, width: int | None) -> None:
    monkeypatch.setattr(listing, "terminal_width", lambda: width)


@pytest.mark.parametrize("width", [None, 80, 60])
def test_runs_ids_never_wrap(runs, capsys, monkeypatch, width):
    _terminal(monkeypatch, width)
    assert main(["runs"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    for run in runs:
        assert len(run.id) > 30  # long enough that the old table folded it
        assert sum(run.id in line for line in lines) == 1, captured.out
    if width is None:  # piped: every column, the long model path whole
        assert LONG_MODEL in captured.out and "started" in captured.out
        assert "Left out" not in captured.err
    else:
        assert max(len(line) for line in lines) <= width, captured.out
        assert "Left out for the terminal's width" in captured.err
        assert "state" in lines[1] + lines[2] and "done" in captured.out
    if width == 60:  # the least important columns leave first
        assert "started" not in captured.out and "started" in captured.err


def test_fit_columns_shortens_text_before_dropping():
    columns = [listing.Column("id", "id", key_column=True),
               listing.Column("text", "text", shrink=True, drop=1),
               listing.Column("when", "when", drop=2)]
    cells = [["x" * 20, "y" * 60, "2026-12-03 16:40"]]
    shown, limits = listing.fit_columns(columns, cells, 70)
    assert shown == [0, 1, 2] and limits[1] < 60
    assert listing._table_width([20, limits[1], 16]) <= 70
    shown, limits = listing.fit_columns(columns, cells, 40)
    assert shown == [0, 1] and limits[1] == 12
    # Only the key column left and still too wide: it stays whole.
    shown, limits = listing.fit_columns(columns, cells, 10)
    assert shown == [0] and 0 not in limits


def test_list_commands_take_format_json(runs, capsys):
    assert main(["runs", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["id"] for r in listed) == sorted(r.id for r in runs)
    first = listed[0]
    assert first["state"] == "done" and first["model"] == LONG_MODEL
    assert first["step"] == 40 and first["total_steps"] == 40 and first["last_loss"] == 1.0

    assert main(["runs", "show", runs[0].id, "--format", "json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["id"] == runs[0].id and shown["path"] == str(runs[0].path)

    assert main(["models", "--format", "json"]) == 0
    models = json.loads(capsys.readouterr().out)
    default = next(m for m in models if m["default"])
    assert default["name"] == "smollm2-135m-instruct" and default["size_bytes"] > 0

    # An adapter folder is all `adapters` needs to list a run's final adapter.
    runs[1].adapter_dir.mkdir()
    (runs[1].adapter_dir / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": LONG_MODEL, "peft_type": "LORA"}))
    assert main(["adapters", "--format", "json"]) == 0
    (adapter,) = json.loads(capsys.readouterr().out)
    assert adapter["ref"] == runs[1].id and adapter["kind"] == "final"
    assert adapter["path"] == str(runs[1].adapter_dir)

    assert main(["history", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    # A diverged run's loss stays said, in JSON a strict reader (jq) accepts.
    runs[2].append_event("log", step=41, loss=float("nan"), lr=1e-4)
    assert main(["runs", "show", runs[2].id, "--format", "json"]) == 0
    out = capsys.readouterr().out
    (shown,) = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert shown["last_loss"] == "NaN"


def test_ratings_list_json(capsys, monkeypatch):
    from engine.ratings import RatingStore

    with RatingStore() as store:
        one = store.add_completion(source="manual", prompt="Capital of France?",
                                   completion="Paris", model="m")
        store.rate(one, stars=5)
    assert main(["ratings", "list", "--format", "json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["id"] == one and item["kind"] == "completion" and item["completion"] == "Paris"
    assert item["rating"]["stars"] == 5
    assert main(["ratings", "list"]) == 0
    assert "Ratings: 1 / 1 rated" in capsys.readouterr().out


def test_empty_lists(capsys):
    assert main(["runs", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs"]) == 0
    assert f"No runs yet under {paths.runs_dir()}" in capsys.readouterr().out

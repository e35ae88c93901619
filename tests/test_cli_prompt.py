"""`tunedeck prompt` and `tunedeck history` from the command line."""

from __future__ import annotations

import json
import sys

import pytest

from cli.main import main
from engine import paths
from engine.data import sample_path
from engine.store import HistoryStore


class Recorder:
    """Stands in for stdout and keeps each write, to see that text arrives in pieces."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(self.writes)


@pytest.mark.slow
def test_prompt_streams_the_real_default_model_and_records_the_try(default_model_dir,
                                                                   monkeypatch, capsys):
    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    rc = main(["prompt", "--input", "What is the capital of France?", "--max-new-tokens", "20"])
    assert rc == 0
    assert "Paris" in out.text
    pieces = [w for w in out.writes if w.strip()]
    assert len(pieces) >= 4  # streamed token by token, not printed once at the end
    err = capsys.readouterr().err
    assert "prompt tokens" in err and "saved as try #1" in err
    with HistoryStore() as store:
        [t] = store.list_tries()
    assert t.model == "smollm2-135m-instruct" and t.adapter is None
    assert t.template == "instruction" and t.strategy["kind"] == "zero-shot"
    assert t.inputs == {"prompt": "What is the capital of France?"}
    assert "Paris" in t.output and t.output.strip() == out.text.strip()
    assert t.prompt_text.startswith("<|im_start|>")
    assert t.metrics["completion_tokens"] > 0 and t.metrics["ttft_s"] > 0
    assert t.params["temperature"] == 0.0
    assert "name: instruction" in t.template_text and "{{ prompt }}" in t.template_text


@pytest.mark.slow
def test_prompt_few_shot_from_a_data_file(default_model_dir, capsys):
    rc = main(["prompt", "--template", "sentiment", "--strategy", "few-shot", "--k", "3",
               "--selection", "similar", "--data", str(sample_path("sentiment")),
               "--input", "The kettle broke after two days. Awful.", "--max-new-tokens", "4"])
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.out.strip()
    with HistoryStore() as store:
        [t] = store.list_tries()
    assert t.strategy["kind"] == "few-shot" and t.strategy["selection"] == "similar"
    assert t.strategy["data"].endswith("train.jsonl")
    assert t.metrics["examples_used"] == 3 and t.metrics["prefix_len"] > 0
    assert t.prompt_text.count("<|im_start|>assistant") == 4  # three shown answers + the reply

    export = paths.home() / "tries.jsonl"
    assert main(["history", "export", str(export)]) == 0
    [row] = [json.loads(line) for line in export.read_text().splitlines()]
    assert row["output"] == t.output
    # An existing file is kept without --force; the history database is never the output.
    capsys.readouterr()
    assert main(["history", "export", str(export)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["history", "export", str(paths.db_path()), "--force"]) == 1
    assert "is this command's input" in capsys.readouterr().err
    assert main(["history", "export", str(export), "--force"]) == 0
    folder = paths.home() / "exports"
    folder.mkdir()
    assert main(["history", "export", str(folder)]) == 0  # a folder: tries.jsonl in it
    assert (folder / "tries.jsonl").read_text() == export.read_text()
    assert main(["history"]) == 0
    assert "sentiment" in capsys.readouterr().out


def test_self_consistency_votes_over_samples(tiny_model_dir, capsys):
    rc = main(["prompt", "--model", str(tiny_model_dir), "--template", "arithmetic-cot",
               "--strategy", "self-consistency", "--samples", "3", "--max-new-tokens", "6",
               "--input", "What is 2 plus 3?"])
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.out.count("--- sample ") == 3 and "--- vote ---" in captured.out
    assert "agreement" in captured.err
    with HistoryStore() as store:
        [t] = store.list_tries()
    assert len(t.metrics["answers"]) == 3 and 0.0 <= t.metrics["agreement"] <= 1.0
    assert t.params["temperature"] == 0.7  # sampling is on by default for self-consistency
    assert "Let's think step by step." in t.prompt_text


def test_no_save_records_nothing(tiny_model_dir, capsys):
    rc = main(["prompt", "--model", str(tiny_model_dir), "--input", "hi", "--max-new-tokens",
               "3", "--no-save", "--mode", "raw", "--show-prompt"])
    assert rc == 0
    assert "--- prompt (" in capsys.readouterr().err
    assert not paths.db_path().exists()


@pytest.mark.parametrize("argv, message", [
    (["prompt", "--strategy", "few-shot", "--input", "x"], "--data FILE"),
    (["prompt", "--template", "nope", "--input", "x"], "No template named 'nope'"),
    (["prompt", "--var", "no-equals", "--input", "x"], "NAME=VALUE"),
    (["prompt"], "--input"),
    (["history", "show", "12"], "No try with id 12"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_list_templates(capsys):
    assert main(["prompt", "--list-templates"]) == 0
    out = capsys.readouterr().out
    for name in ("instruction", "text-to-sql", "sentiment", "arithmetic-cot"):
        assert name in out


def test_prompt_with_an_adapter_records_it(tiny_model_dir, capsys):
    from adapter_runs import make_run

    run = make_run(tiny_model_dir, name="cli-adapter")
    rc = main(["prompt", "--adapter", run.id, "--input", "hi", "--max-new-tokens", "3"])
    assert rc == 0, capsys.readouterr().err
    with HistoryStore() as store:
        [t] = store.list_tries()
    assert t.adapter and run.id in t.adapter
    assert t.model == tiny_model_dir.name  # the adapter's own base model was loaded

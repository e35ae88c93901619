"""`tunedeck gpu-check`: the no-GPU path as a user meets it, the table / JSON / skip logic with the
GPU and the heavy steps faked, and the real steps (train through the runner, both sides of the
throughput comparison, merge, evaluation) on a tiny model on the CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import TunedeckError
from engine.gpu_check import EXIT_FAILED, EXIT_NO_GPU, EXIT_OK, Outcome, Step, probes, run_steps
from engine.gpu_check import steps as gc_steps

ROOT = Path(__file__).resolve().parent.parent


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _rows(report: dict) -> dict[str, dict]:
    return {r["check"]: r for r in report["rows"]}


# --------------------------------------------------------------------------- no GPU (this machine)


def test_without_a_gpu_it_says_so_and_exits_cleanly(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "-m", "cli.main", "gpu-check", "--output", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == EXIT_OK, proc.stderr
    assert probes.NO_GPU in proc.stdout  # one unwrapped line
    assert "Traceback" not in proc.stdout + proc.stderr
    report = _json(out)
    assert report["verdict"] == "no-gpu" and report["exit_code"] == EXIT_OK
    rows = _rows(report)
    assert list(rows) == ["device", "bf16", "4-bit", "train", "throughput", "merge", "eval"]
    assert rows["device"]["result"] == "failed"
    assert rows["device"]["data"]["cuda_available"] is False
    assert rows["bf16"]["value"] == "needs device (failed)"
    assert rows["train"]["value"] == "needs 4-bit (skipped)"
    assert {r["result"] for n, r in rows.items() if n != "device"} == {"skipped"}
    assert "run_id" not in report


def test_require_gpu_exits_3_and_no_json_is_written_unasked(tmp_path, monkeypatch, capsys):
    from cli.main import main

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["gpu-check"]) == EXIT_OK
    assert main(["gpu-check", "--require-gpu"]) == EXIT_NO_GPU
    assert not list(cwd.iterdir())  # the table said all there is
    assert "exit code 0; --require-gpu makes it 3" in capsys.readouterr().out


# --------------------------------------------------------------------------- sequencing


def _step(name, result="ok", needs=(), raises=None, calls=None):
    def run(ctx):
        if calls is not None:
            calls.append(name)
        if raises is not None:
            raise raises
        return Outcome(result, f"{name} {result}", {"n": 1})

    return Step(name, run, needs)


def test_a_failure_is_a_row_and_what_needs_it_is_skipped():
    calls = []
    report = run_steps([
        _step("a", calls=calls),
        _step("b", needs=("a",), raises=TunedeckError("b broke: fix it"), calls=calls),
        _step("c", needs=("b",), calls=calls),
        _step("d", needs=("c",), calls=calls),
        _step("e", needs=("a",), raises=ValueError("odd\nsecond line"), calls=calls),
        _step("f", result="warn", needs=("a",), calls=calls),
    ], ctx=None)
    rows = {r.check: r for r in report.rows}
    assert calls == ["a", "b", "e", "f"]
    assert (rows["b"].result, rows["b"].value) == ("failed", "b broke: fix it")
    assert (rows["c"].result, rows["c"].value) == ("skipped", "needs b (failed)")
    assert rows["d"].value == "needs c (skipped)"
    assert rows["e"].value == "ValueError: odd"  # one line, no traceback
    assert rows["e"].data == {"error_type": "ValueError"}
    assert rows["f"].result == "warn"
    assert report.verdict() == "failed" and report.exit_code() == EXIT_FAILED
    assert [r["check"] for r in json.loads(report.to_json())["rows"]] == list("abcdef")


def test_warnings_pass_and_ctrl_c_ends_the_check_as_interrupted():
    assert run_steps([_step("a", "warn")], None).exit_code() == EXIT_OK
    report = run_steps([_step("a"), _step("b", raises=KeyboardInterrupt()), _step("c")], None)
    assert [(r.check, r.result) for r in report.rows] == [
        ("a", "ok"), ("b", "failed"), ("c", "skipped")]
    assert report.rows[1].value == "interrupted (Ctrl-C)"
    assert report.verdict() == "interrupted" and report.exit_code() == 130


def test_the_meter_credits_each_step_with_its_own_batches():
    """The data loader collates one batch ahead: a step is credited with the batch it trained,
    not the one fetched during it."""
    from engine.gpu_check.throughput import Meter, pad_collator

    meter = Meter(pad_collator(0), fast=False)
    for n in (2, 5, 9):  # three one-row batches of n tokens, all collated before any step ends
        meter([{"input_ids": [1] * n, "labels": [1] * n}])
    meter.consume(1, timed=False)  # step 1: warm-up
    meter.consume(1, timed=True)  # step 2 trained the 5-token batch
    assert (meter.timed_tokens, meter.tokens, len(meter.pending)) == (5, 7, 1)


# --------------------------------------------------------------------------- GPU and heavy steps faked


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """The probes say "a GPU", and each heavy step is a recording fake: only the table, the
    JSON and the skip logic are real here."""
    calls: list[str] = []

    def ok(name, data=None):
        def run(ctx):
            calls.append(name)
            return Outcome("ok", f"{name} fine", data or {})
        return run

    monkeypatch.setattr(probes, "device", ok("device", {"cuda_available": True}))
    monkeypatch.setattr(probes, "bf16", ok("bf16"))
    monkeypatch.setattr(probes, "four_bit", ok("4-bit"))

    def train(ctx):
        from engine import paths
        from engine.training.rundir import RunDir

        calls.append("train")
        ctx.run = RunDir(paths.ensure_dir(paths.runs_dir() / "20260101-000000-gpu-check-fake"))
        return Outcome("ok", "200 steps", {"run_id": ctx.run.id})

    monkeypatch.setattr(gc_steps, "train", train)
    monkeypatch.setattr(gc_steps, "throughput", ok("throughput"))
    monkeypatch.setattr(gc_steps, "merge", ok("merge"))
    monkeypatch.setattr(gc_steps, "evaluate", ok("eval"))
    monkeypatch.chdir(tmp_path)
    return calls


def test_faked_gpu_a_failed_step_is_a_row_and_the_json_goes_to_the_run(fake_gpu, monkeypatch,
                                                                         capsys):
    from cli.main import main

    def broken(ctx):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gc_steps, "throughput", broken)
    assert main(["gpu-check"]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "throughput" in out and "illegal memory access" in out
    assert "1 check(s) failed: throughput" in out
    from engine.training.rundir import open_run

    run = open_run("20260101-000000-gpu-check-fake")
    report = _json(run.path / "gpu-check.json")
    rows = _rows(report)
    assert rows["throughput"]["result"] == "failed"
    assert rows["throughput"]["value"] == ("RuntimeError: CUDA error: an illegal memory access "
                                           "was encountered")
    assert rows["merge"]["result"] == rows["eval"]["result"] == "ok"  # they need train only
    assert report["run_id"] == run.id and report["verdict"] == "failed"
    assert report["exit_code"] == EXIT_FAILED and report["options"]["steps"] == 200
    assert fake_gpu == ["device", "bf16", "4-bit", "train", "merge", "eval"]


def test_faked_gpu_a_failed_run_skips_merge_and_eval_and_keeps_the_cwd_file(fake_gpu, monkeypatch,
                                                                           tmp_path, capsys):
    from cli.main import main

    def failed_run(ctx):
        raise TunedeckError("run X ended failed: Out of memory. (see train.log)")

    monkeypatch.setattr(gc_steps, "train", failed_run)
    assert main(["gpu-check"]) == EXIT_FAILED
    rows = _rows(_json(tmp_path / "gpu-check.json"))  # no run: the working directory
    assert rows["train"]["value"].startswith("run X ended failed")
    assert rows["merge"]["value"] == rows["eval"]["value"] == "needs train (failed)"
    assert rows["throughput"]["result"] == "ok"
    # A second check does not overwrite the first one's file.
    (tmp_path / "gpu-check.json").write_text("keep")
    assert main(["gpu-check"]) == EXIT_FAILED
    assert (tmp_path / "gpu-check.json").read_text() == "keep"
    assert "the JSON was not written" in capsys.readouterr().out


def test_an_existing_output_is_refused_before_any_step_runs(fake_gpu, tmp_path, capsys):
    from cli.main import main

    target = tmp_path / "mine.json"
    target.write_text("keep")
    assert main(["gpu-check", "--output", str(target)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert fake_gpu == [] and target.read_text() == "keep"
    assert main(["gpu-check", "--output", str(target), "--force"]) == EXIT_OK
    assert _json(target)["verdict"] == "passed"


def test_bad_options_are_a_message(capsys):
    from cli.main import main

    assert main(["gpu-check", "--bench-steps", "1"]) == 1
    assert "--bench-steps must be at least 2" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real steps on a CPU


def test_the_evaluation_step_scores_base_adapter_and_merged(tiny_model_dir):
    from adapter_runs import make_run

    ctx = gc_steps.Context(gc_steps.Options(eval_limit=1, device="cpu"))
    ctx.run = make_run(tiny_model_dir)
    ctx.merged = tiny_model_dir  # any model folder loads as "the merged model"
    outcome = gc_steps.evaluate(ctx)
    assert outcome.data["examples"] == 1 and outcome.data["split"] == "test"
    assert set(outcome.data["accuracy"]) == {"base", "adapter", "merged"}
    assert outcome.data["metric"] == "execution accuracy"
    assert [r["column"] for r in outcome.data["table"]] == ["zero-shot", "adapter"]
    # A random model answers nothing right: the adapter cannot beat the base, and it says so.
    assert outcome.result == "warn" and "does not beat the base" in outcome.value


@pytest.mark.slow
def test_the_real_run_throughput_and_merge_on_a_cpu(tiny_model_dir, tunedeck_home, tmp_path,
                                                    monkeypatch, capsys):
    """`--device cpu`: the runner trains the recipe for real, both trainers are measured, the
    adapter is merged; only the evaluation (tested above) is faked, to keep this under a
    minute. The recipe is cut to 48 rows so the runner's evaluation and tokenizing are short."""
    from cli.main import main

    recipe = gc_steps.Context.config
    monkeypatch.setattr(gc_steps.Context, "config",
                        lambda self: dataclasses.replace(recipe(self), limit=48, eval_limit=8))
    seen = {}

    def evaluate(ctx):
        seen["merged"] = ctx.merged
        return Outcome("ok", "faked", {})

    monkeypatch.setattr(gc_steps, "evaluate", evaluate)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "check.json"
    code = main(["gpu-check", "--device", "cpu", "--model", str(tiny_model_dir), "--steps", "1",
                 "--bench-steps", "2", "--eval-limit", "1", "--output", str(out)])
    report = _json(out)
    rows = _rows(report)
    assert code == EXIT_OK, report["rows"]
    stdout = capsys.readouterr().out
    assert "throughput" in stdout and "'loss'" not in stdout  # the trainers' logs stay off it
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # put back as it was
    assert rows["device"]["data"]["device"] == "cpu"

    train = rows["train"]["data"]
    assert train["state"] == "done" and train["steps"] == 1 and train["device"] == "cpu"
    from engine.training.config import TrainConfig
    from engine.training.rundir import open_run

    run = open_run(train["run_id"])
    assert report["run_dir"] == str(run.path)
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert [e["state"] for e in run.read_events() if e["type"] == "state"][-1] == "done"
    config = TrainConfig.from_yaml(run.config_path)  # the shipped recipe, as overridden
    assert (config.method, config.max_steps, config.template) == ("qlora", 1, "text-to-sql-tuned")

    bench = rows["throughput"]["data"]
    for kind in ("baseline", "ours"):
        assert bench[kind]["tokens_per_s"] > 0 and bench[kind]["timed_steps"] == 1
        assert bench[kind]["peak_mem_mb"] is None  # CUDA memory only
        assert bench[kind]["gradient_checkpointing"] is False  # the runner's choice on a CPU
    assert bench["ours"]["padding"] < bench["baseline"]["padding"]  # length-sorted batches
    assert bench["speedup"] == pytest.approx(
        bench["ours"]["tokens_per_s"] / bench["baseline"]["tokens_per_s"], rel=1e-2)

    merged = Path(rows["merge"]["data"]["path"])
    assert merged == run.path / "merged" == seen["merged"]
    assert (merged / "config.json").is_file()

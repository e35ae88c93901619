"""Findings 1 and 13 of the new-user walk, without a model: pre-flight's time counts evaluation
and sampling (measured in an earlier run where there is one), and `doctor` states the training
precision the runner will really pick."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine import paths
from engine.training.config import TrainConfig
from engine.training.rundir import RunDir
from engine.training.suggest import BetweenSteps, between_steps


def test_evaluation_and_samples_are_costed_from_the_training_pace():
    config = TrainConfig(method="qlora", eval_every=2, sample_every=3, sample_k=2)
    out = between_steps(config, steps=6, eval_rows=72, row_tokens=200, train_tokens_per_s=100,
                        completion_tokens=20, total_params=135_000_000)
    assert (out.evals, out.eval_rows, out.sample_rounds, out.samples) == (3, 72, 2, 2)
    # QLoRA evaluates at the training pace: 200 tokens a row at 100 tokens/s
    assert out.eval_seconds == pytest.approx(3 * 72 * 2.0)
    assert out.sample_seconds == pytest.approx(2 * 2 * 36 * 0.08)
    assert out.seconds == pytest.approx(out.eval_seconds + out.sample_seconds)
    assert out.describe(lambda s: f"{s:.0f}s") == ("3 evaluations of 72 rows ~432s · 2 rounds "
                                                   "of 2 samples ~12s")


def test_an_earlier_run_of_the_same_setup_is_the_measure():
    config = TrainConfig(method="qlora", eval_every=3)
    run = RunDir(paths.ensure_dir(paths.runs_dir() / "20251129-090000-sql-a1b2"))
    run.config_path.write_text(f"dataset: {config.dataset_path()}\nsample_k: 2\n")
    run.write_status("done", model=config.model, method="qlora", eval_seconds=193.0,
                     eval_rows=72, sample_seconds=10.0)
    other = RunDir(paths.ensure_dir(paths.runs_dir() / "20251129-100000-lora-c3d4"))
    other.config_path.write_text(f"dataset: {config.dataset_path()}\n")
    other.write_status("done", model=config.model, method="lora", eval_seconds=1.0, eval_rows=72)
    out = between_steps(config, steps=6, eval_rows=36, row_tokens=200, train_tokens_per_s=100,
                        completion_tokens=20, total_params=135_000_000)
    assert out.measured_in == run.id  # not the newer LoRA run
    assert out.eval_seconds == pytest.approx(2 * 36 * 193.0 / 72)
    assert "(measured in 20251129-090000-sql-a1b2)" in out.describe(str)


def test_no_evaluation_no_cost():
    out = between_steps(TrainConfig(eval_every=0, sample_every=0), steps=6, eval_rows=72,
                        row_tokens=200, train_tokens_per_s=100, completion_tokens=20,
                        total_params=1)
    assert out == BetweenSteps() and out.describe(str) == ""


def test_the_preflight_panel_shows_what_the_time_is_made_of():
    from tui.widgets.preflight_report import report_content

    report = SimpleNamespace(
        ok=True, errors=[], warnings=["limit 80 (set in the config): only the first 80 "
                                      "training rows are used."],
        example_tokens=[], trainable_params=1, total_params=10, memory_estimate_mb={},
        steps=6, est_seconds=9 + 321 + 20, train_seconds=9.0, train_rows=80, eval_rows=72,
        between=BetweenSteps(evals=2, eval_rows=72, eval_seconds=321.0, sample_rounds=2,
                             samples=2, sample_seconds=20.0))
    text = report_content(report).plain
    assert "6 (time ~5m50s)" in text
    assert "of which  steps ~9s · 2 evaluations of 72 rows ~5m21s · 2 rounds of 2 samples ~20s" \
        in text
    assert "only the first 80 training rows are used" in text


@pytest.mark.parametrize("speedup, shown", [
    (2.1, "bf16 mixed (fp32 weights and optimizer) with precision: auto (this CPU's bf16 "
          "matmul is 2.1x its fp32 one)"),
    (0.05, "fp32 with precision: auto (bf16 is not fast on this CPU (0.05x fp32))"),
])
def test_doctor_states_the_precision_training_picks(monkeypatch, speedup, shown):
    from cli.doctor import training_precision
    from engine import models
    from engine.training.shared import mixed_precision

    monkeypatch.setattr(models, "cpu_bf16_speedup", lambda: speedup)
    policy = SimpleNamespace(device="cpu", dtype_name="float32")
    check, value, verdict = training_precision(policy)
    assert check == "training precision" and value == shown and verdict == "ok"
    assert value.split(" ")[0] == mixed_precision(TrainConfig(), "cpu", "float32")[0]

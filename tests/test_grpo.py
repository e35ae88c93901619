"""GRPO (method grpo): the recipe end to end on a tiny model, resume after kill -9, its config and
pre-flight checks, and the live view's reward series."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import time

import pytest

from engine import paths
from engine.errors import ConfigError
from engine.training import launch
from engine.training.config import TrainConfig
from engine.training.rundir import RunDir
from tests.in_process import run_in_process

SQL = "sample_data/text_to_sql"
T0 = 1_764_400_000.0


def grpo_config(model, **overrides) -> TrainConfig:
    settings = dict(model=str(model), dataset=SQL, method="grpo", template="text-to-sql-tuned",
                    limit=8, batch_size=4, num_generations=4, max_completion_length=12,
                    max_steps=2, sample_every=1, sample_k=2, learning_rate=1e-4)
    settings.update(overrides)
    return TrainConfig(**settings)


def _logs(run):
    return [e for e in run.read_events() if e["type"] == "log"]


def _wait(predicate, what, run, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if run.state() == "failed":
            raise AssertionError(f"run failed: {run.log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(600)
def test_two_step_grpo_run_on_a_tiny_model(tiny_model_dir, capsys):
    from engine.adapter_base import read_record

    run = launch.create_run(grpo_config(tiny_model_dir))
    assert run_in_process(run) == 0, run.log_path.read_text()[-3000:]
    status = run.read_status()
    assert status["state"] == "done" and status["step"] == 2 and status["method"] == "grpo"
    logs = _logs(run)
    assert [e["step"] for e in logs] == [1, 2]
    for event in logs:  # the live view's series: each reward function's mean and spread, KL
        for key in ("reward", "reward_std", "rewards/sql_exec/mean", "rewards/sql_exec/std",
                    "rewards/format/mean", "kl", "completions/mean_length"):
            assert isinstance(event[key], float) and math.isfinite(event[key]), key
        assert event["completions/mean_length"] <= 12
    samples = [e for e in run.read_events() if e["type"] == "sample"]
    assert len(samples) == 4 and {s["step"] for s in samples} == {1, 2}
    for sample in samples:  # a sampled completion with what each reward gave it
        assert sample["reference"].upper().startswith(("SELECT", "WITH"))
        assert set(sample["rewards"]) == {"sql_exec", "format"}
        expected = sample["rewards"]["sql_exec"] + 0.2 * sample["rewards"]["format"]
        assert sample["reward"] == pytest.approx(expected, abs=1e-3)
    # The adapter and its base record, as every other recipe leaves them.
    assert (run.adapter_dir / "adapter_config.json").is_file()
    record = read_record(run.adapter_dir)
    assert record.model == str(tiny_model_dir) and record.fingerprint
    # In process, the runner's log lines go to stdout (train.log when detached).
    assert "rewards: sql_exec x1, format x0.2 (sql task, 8 prompts)" in capsys.readouterr().out


@pytest.mark.timeout(600)
def test_grpo_resumes_after_kill_9_and_continues_from_an_sft_adapter(tiny_model_dir,
                                                                   monkeypatch):
    from peft import PeftConfig

    # An SFT adapter to start from (a two-step LoRA run).
    sft = launch.create_run(TrainConfig(model=str(tiny_model_dir), dataset=SQL, method="lora",
                                        template="text-to-sql-tuned", limit=8, batch_size=4,
                                        max_steps=2, max_seq_len=96))
    assert run_in_process(sft) == 0
    monkeypatch.setenv("TUNEDECK_STEP_DELAY", "0.5")  # the tiny model is too quick to catch
    cfg = grpo_config(tiny_model_dir, adapter=sft.id, max_steps=5, save_every=2, sample_every=0)
    run = launch.launch(cfg, check=False)
    _wait(lambda: run.latest_checkpoint() is not None and _logs(run)
          and _logs(run)[-1]["step"] >= 3, "step 3", run)
    os.killpg(os.getpgid(run.read_status()["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while run.state() not in ("failed", "stopped") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.state() == "failed"  # killed: no state of its own, the dead pid says so
    launch.resume(run)
    _wait(lambda: run.read_status().get("state") == "done", "the resumed run to finish", run)
    steps = [e["step"] for e in _logs(run)]
    assert steps[-1] == 5 and steps == sorted(steps)  # it went on from the checkpoint
    resumed = run.read_status()["resumed_from"]
    assert resumed in ("checkpoint-2", "checkpoint-4")
    assert f"resuming from {resumed}" in run.log_path.read_text()
    # The trained adapter is the SFT adapter's shape (LoRA on the same base), without TRL's
    # frozen reference copy.
    saved = PeftConfig.from_pretrained(str(run.adapter_dir))
    assert saved.base_model_name_or_path == PeftConfig.from_pretrained(
        str(sft.adapter_dir)).base_model_name_or_path
    assert not (run.adapter_dir / "ref").exists()


def test_grpo_config_checks_name_the_field_and_the_fix(tiny_model_dir):
    def problems(**overrides):
        with pytest.raises(ConfigError) as err:
            grpo_config(tiny_model_dir, **overrides).validate(device_checks=False)
        return str(err.value)

    assert "num_generations: at least 2" in problems(num_generations=1)
    assert "multiple of num_generations (3)" in problems(num_generations=3, batch_size=4)
    assert "temperature: must be positive" in problems(temperature=0.0)
    assert "rewards: " in problems(rewards={"sql_exact": 1.0})
    assert "database: /nonexistent.db is not a file" in problems(database="/nonexistent.db")
    grpo_config(tiny_model_dir, rewards={"sql_exec": 1.0}).validate(device_checks=False)
    # Per-method defaults: GRPO's KL weight and learning rate, unless the config says.
    assert TrainConfig(method="grpo").beta == 0.04
    assert TrainConfig(method="grpo").learning_rate == 5e-6
    # YAML writes weights as ints or floats; both are numbers.
    cfg = TrainConfig.from_dict({"method": "grpo", "rewards": {"sql_exec": 1, "format": 0.5}})
    assert cfg.rewards == {"sql_exec": 1.0, "format": 0.5}
    with pytest.raises(ConfigError, match="rewards.format must be float"):
        TrainConfig.from_dict({"method": "grpo", "rewards": {"format": "lots"}})


def test_a_reward_file_is_pinned_where_the_run_was_created(tiny_model_dir, tmp_path,
                                                           monkeypatch):
    (tmp_path / "mine.py").write_text("def short(prompts, completions, **kw):\n"
                                      "    return [1.0 for _ in completions]\n")
    monkeypatch.chdir(tmp_path)
    cfg = grpo_config(tiny_model_dir, rewards={"sql_exec": 1.0, "mine.py:short": 0.5})
    cfg.validate(device_checks=False)
    # The runner runs in the project folder: the saved config names the file absolutely.
    assert cfg.resolved().rewards == {"sql_exec": 1.0, f"{tmp_path / 'mine.py'}:short": 0.5}


def test_preflight_checks_the_rewards_on_the_references(tiny_model_dir, tmp_path):
    from engine.training.preflight import preflight

    report = preflight(grpo_config(tiny_model_dir, max_steps=-1, epochs=1))
    assert report.ok, report.errors
    assert report.steps == 8  # 8 prompts, one prompt (of 4 completions) per step
    assert not [w for w in report.warnings if "sql_exec gives" in w]
    assert any("each step samples 4 completions of 1 prompt" in w for w in report.warnings)
    assert any("max_completion_length: " in w for w in report.warnings)  # 12 cuts the queries
    assert report.est_seconds and report.est_seconds > 0

    # A database without the tables: the gold queries fail their own reward.
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    report = preflight(grpo_config(tiny_model_dir, database=str(empty)))
    assert not report.ok
    assert any("sql_exec cannot judge any of the data's own references" in e
               for e in report.errors)


def test_unset_generation_settings_are_fitted_with_their_reasons():
    from engine.training.grpo import fit_settings

    cfg = TrainConfig(method="grpo", batch_size=8)
    fitted, reasons = fit_settings(cfg, [40, 152, 60], [30, 44, 38], "cpu")
    assert (fitted.num_generations, fitted.max_completion_length, fitted.temperature) == \
        (4, 176, 1.0)
    assert reasons[0] == "num_generations 4: 4 per prompt on cpu (2 prompt(s) a step)"
    assert reasons[1].startswith("max_completion_length 176: the longest reference is 152")
    # A GPU samples 8 a prompt: a batch of 6 holds one group of 6 there, two of 3 on a CPU.
    assert fit_settings(cfg, [10], [10], "cuda")[0].num_generations == 8
    six = TrainConfig(method="grpo", batch_size=6)
    assert fit_settings(six, [10], [10], "cuda")[0].num_generations == 6
    assert fit_settings(six, [10], [10], "cpu")[0].num_generations == 3
    # The context bounds the completions; a setting the config gives is kept, with no reason.
    assert fit_settings(cfg, [500], [100], "cpu", context=512)[0].max_completion_length == 412
    given = TrainConfig(method="grpo", num_generations=2, max_completion_length=64,
                        temperature=0.7)
    assert fit_settings(given, [500], [10], "cpu") == (given, [])


def test_sample_events_show_the_best_and_worst_completion_of_each_prompt():
    from engine.training.grpo import sample_events

    prompt_a = [{"role": "user", "content": "a?"}]
    prompt_b = [{"role": "user", "content": "b?"}]
    logs = {"prompt": [prompt_a] * 3 + [prompt_b] * 3,
            "completion": [[{"role": "assistant", "content": c}] for c in "uvwxyz"],
            "rewards": {"sql_exec": [0.0, 1.0, 0.0, 1.0, 1.0, 0.0],
                        "format": [1.0, 1.0, 0.0, 0.0, 1.0, float("nan")]},
            "advantages": [0.1, 0.9, -1.0, 0.0, 0.5, -0.5]}
    out = sample_events(logs, [1.0, 0.5], {"a?": "A", "b?": "B"}, k=3)
    assert [(s["prompt"], s["completion"], s["reward"]) for s in out] == [
        ("a?", "v", 1.5), ("a?", "w", 0.0), ("b?", "y", 1.5)]
    assert out[0]["reference"] == "A" and out[0]["rewards"] == {"sql_exec": 1.0, "format": 1.0}


def grpo_run(run_id: str, steps: int = 24) -> RunDir:
    run = RunDir(paths.ensure_dir(paths.runs_dir() / run_id))
    run.config_path.write_text("model: smollm2-135m-instruct\nmethod: grpo\n", encoding="utf-8")
    run.write_status("done", total_steps=steps, step=steps, started=T0,
                     model="smollm2-135m-instruct", method="grpo")
    run.append_event("state", state="running", t=T0)
    for step in range(1, steps + 1):
        exec_mean = min(1.0, 0.2 + step / 30)
        run.append_event("log", step=step, epoch=step / steps, loss=0.001 * math.sin(step),
                         lr=5e-6, grad_norm=0.3, mem_mb=900.0, t=T0 + 20 * step,
                         reward=exec_mean + 0.2 * 0.9, reward_std=0.35,
                         **{"rewards/sql_exec/mean": exec_mean, "rewards/sql_exec/std": 0.4,
                            "rewards/format/mean": 0.9, "rewards/format/std": 0.1,
                            "kl": 0.0005 * step, "completions/mean_length": 40 - step / 2})
        if step % 12 == 0:
            run.append_event("sample", step=step, prompt="How many customers are there?",
                             reference="SELECT COUNT(*) FROM customers",
                             completion="SELECT COUNT(*) FROM customers", reward=1.2,
                             temperature=0.9,
                             rewards={"sql_exec": 1.0, "format": 1.0}, t=T0 + 20 * step)
    run.append_event("state", state="done", t=T0 + 20 * steps + 1)
    run.log_path.write_text("rewards: sql_exec x1, format x0.2\n", encoding="utf-8")
    return run


async def test_live_view_draws_the_reward_series_and_shows_rewards():
    from tui.app import TunedeckApp
    from tui.widgets.loss_chart import LossChart

    grpo_run("20251129-090000-grpo-a1b2")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f5", "enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        chart = app.screen.query_one(LossChart)
        labels = [c.label for c in chart.curves]
        assert labels == ["reward (smoothed)", "sql_exec", "format", "lr"]
        sql_exec = chart.curves[1]
        assert sql_exec.ys[0] == pytest.approx(0.2 + 1 / 30) and sql_exec.ys[-1] == 1.0
        line = str(app.screen.query_one("#run-progress-line").render())
        assert "reward 1.18±0.35" in line and "sql_exec 1.00±0.40" in line
        assert "kl 0.0120" in line and "len 28" in line
        panel = str(app.screen.query_one("#run-samples").query(".sample").last().render())
        assert "reward" in panel and "1.20 (sql_exec 1 · format 1)" in panel


async def test_runs_list_shows_a_grpo_runs_mean_reward_and_charts_its_rewards():
    from tui.app import TunedeckApp
    from tui.widgets.loss_chart import LossChart

    grpo_run("20251129-090000-grpo-a1b2")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        table = app.screen.table
        row = [str(c) for c in table.get_row_at(0)]
        assert row[4] == "R 1.18" and row[5] == "grpo"
        chart = app.screen.query_one(LossChart)
        assert [c.label for c in chart.curves][:3] == ["reward (smoothed)", "sql_exec", "format"]


def test_rate_screen_import_keeps_a_sampled_completion_and_its_rewards():
    from engine.ratings import RatingStore

    run = grpo_run("20251129-090000-grpo-a1b2")
    with RatingStore() as store:
        ids = store.import_run_samples(run)
        assert len(ids) == 2
        completion = store.get_completion(ids[0])
    assert completion.completion == "SELECT COUNT(*) FROM customers"
    assert completion.params["temperature"] == 0.9
    assert completion.extra["reward"] == 1.2
    assert completion.extra["rewards"] == {"sql_exec": 1.0, "format": 1.0}


def test_snapshot_grpo_run_view(snap_compare, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    from tui.app import TunedeckApp

    grpo_run("20251129-090000-grpo-a1b2")

    async def open_run(pilot):
        await pilot.press("f5", "enter")
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24),
                        run_before=open_run)

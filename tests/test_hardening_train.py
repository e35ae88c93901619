"""Training hardened against hostile input, without training anything: numbers that are not
numbers, empty configs, pre-flight refusals, one runner per run directory, stop that signals
only the run's own runner, checkpoints cut short, a full disk while writing the status."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from engine.errors import ConfigError, TunedeckError
from engine.training import launch, rundir
from engine.training.config import TrainConfig
from engine.training.rundir import COMPLETE, RunDir, process_start_time

PROJECT = Path(__file__).resolve().parents[1]
SENTIMENT = PROJECT / "sample_data" / "sentiment"


# --------------------------------------------------------------------------- config numbers


@pytest.mark.parametrize("line, field, says", [
    ("learning_rate: .inf", "learning_rate", "finite number (got inf)"),
    ("learning_rate: .nan", "learning_rate", "finite number (got nan)"),
    ("learning_rate: 0", "learning_rate", "must be positive"),
    ("learning_rate: -1e-4", "learning_rate", "must be positive"),
    ("learning_rate: 5", "learning_rate", "at most 1"),
    ("epochs: .inf", "epochs", "finite number (got inf)"),
    ("epochs: 0", "epochs", "must be positive"),
    ("lora_dropout: .nan", "lora_dropout", "finite number (got nan)"),
    ("warmup_ratio: -.inf", "warmup_ratio", "finite number (got -inf)"),
    ("beta: .nan", "beta", "finite number (got nan)"),
    ("seed: -1", "seed", "must be in 0"),
    ("max_steps: 1000000000000", "max_steps", "out of range"),
    ("batch_size: 0", "batch_size", "at least 1"),
])
def test_numbers_that_make_no_run_are_refused_naming_the_field(tmp_path, line, field, says):
    path = tmp_path / "c.yaml"
    path.write_text(f"{line}\n")
    config = TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError) as caught:
        config.validate(device_checks=False)
    problems = str(caught.value).splitlines()[1:]
    assert len(problems) == 1, problems  # one message per bad field, no echo from range checks
    assert problems[0].strip().startswith(f"- {field}:") and says in problems[0]


def test_an_infinite_learning_rate_is_stopped_before_anything_starts(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"method: lora\ndataset: {SENTIMENT}\nlearning_rate: .inf\n")
    assert main(["train", str(path)]) == 1
    captured = capsys.readouterr()
    assert "learning_rate: must be a finite number (got inf)" in captured.out
    assert captured.err.startswith("tunedeck: ") and "Traceback" not in captured.err
    assert not list((tmp_path / "home").glob("runs/*"))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_file_is_refused(tmp_path, capsys, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml: the config is empty.*model, dataset"):
        TrainConfig.from_yaml(path)
    assert main(["train", str(path), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunedeck: ") and "the config is empty" in err


# --------------------------------------------------------------------------- pre-flight


def _preflight(tiny_model_dir, **settings):
    from engine.training.preflight import preflight

    base = dict(model=str(tiny_model_dir), dataset=str(SENTIMENT), method="lora", limit=4,
                batch_size=2, max_seq_len=96, max_steps=2)
    return preflight(TrainConfig(**{**base, **settings}))


def test_preflight_refuses_target_modules_the_model_does_not_have(tiny_model_dir):
    report = _preflight(tiny_model_dir, target_modules=["q_projj", "v_prj"])
    assert not report.ok
    (error,) = [e for e in report.errors if e.startswith("target_modules:")]
    assert "'q_projj', 'v_prj'" in error and "nothing to train" in error
    assert "q_proj" in error and "down_proj" in error  # the layers it does have
    # A block is not a layer LoRA can wrap; a regex matching nothing fails like a list does.
    assert not _preflight(tiny_model_dir, target_modules=["mlp"]).ok
    assert "blocks, not layers" in _preflight(tiny_model_dir, target_modules=["mlp"]).errors[0]
    assert not _preflight(tiny_model_dir, target_modules=r".*\.attn_q").ok
    assert "not a valid regular expression" in _preflight(tiny_model_dir,
                                                          target_modules="(").errors[0]
    # One typo among real names trains the rest: a warning, not silence.
    mixed = _preflight(tiny_model_dir, target_modules=["q_proj", "v_prj"])
    assert mixed.ok and any("'v_prj'" in w and "train nothing" in w for w in mixed.warnings)
    assert _preflight(tiny_model_dir, target_modules=r".*\.(q|v)_proj").ok


def test_preflight_refuses_max_seq_len_beyond_the_context_window(tiny_model_dir, tmp_path):
    from engine.training.preference import preflight_preference

    report = _preflight(tiny_model_dir, max_seq_len=4096)
    assert not report.ok
    assert report.errors == ["max_seq_len: 4096 is beyond the model's context window of 2,048 "
                             "tokens; set max_seq_len to at most 2048."]
    assert _preflight(tiny_model_dir, max_seq_len=2048).ok
    data = tmp_path / "dpo.jsonl"
    data.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    dpo = preflight_preference(TrainConfig(model=str(tiny_model_dir), dataset=str(data),
                                           method="dpo", max_seq_len=4096, max_steps=1))
    assert not dpo.ok and "context window of 2,048" in dpo.errors[0]


# --------------------------------------------------------------------------- CUDA, without a GPU


def test_cuda_choices_follow_the_device_policy_and_the_memory(monkeypatch, tmp_path,
                                                              tiny_model_dir):
    """bf16 from the GPU, the paged 8-bit optimizer, and gradient checkpointing only when the
    activations would not fit without it; the run decides as its pre-flight does."""
    from engine import models
    from engine.training import data as tdata
    from engine.training import preflight_checks, sft
    from engine.training.shared import common_args, load_conversations

    monkeypatch.setattr(models, "device_policy",
                        lambda device=None: models.DevicePolicy("cuda", "bfloat16", True))
    config = TrainConfig(model=str(tiny_model_dir), dataset=str(SENTIMENT), method="lora",
                         limit=4, batch_size=2, max_seq_len=96, max_steps=2)
    tokenizer = models.load_tokenizer(config.model)
    train_ds, _ = tdata.build_dataset(tokenizer, load_conversations(config)[0],
                                      config.max_seq_len, config.completion_only_loss)
    decided = {}
    for gpu_mb in (80_000.0, 1.0):
        monkeypatch.setattr(preflight_checks, "gpu_memory_mb", lambda mb=gpu_mb: mb)
        report = _preflight(tiny_model_dir)
        assert report.ok and report.precision == "bf16" and report.optimizer == "paged_adamw_8bit"
        assert sft.run_checkpointing(config, "cuda", train_ds) == (
            report.checkpointing, report.checkpointing_reason)
        decided[gpu_mb] = report
    roomy, tight = decided[80_000.0], decided[1.0]
    assert not roomy.checkpointing and "shared-prefix pass stays on" in roomy.checkpointing_reason
    assert "Optimizer: paged_adamw_8bit; gradient checkpointing off (off: ~" in roomy.text()
    assert tight.checkpointing and "exceeds 85% of the GPU's 1 MB" in tight.checkpointing_reason
    assert (tight.memory_estimate_mb["activations"]
            < roomy.memory_estimate_mb["activations"])  # the estimate goes with the choice
    args = common_args(config, tmp_path, "cuda", "bfloat16", tight.checkpointing)
    assert args["gradient_checkpointing"] and args["bf16"] and args["optim"] == "paged_adamw_8bit"
    assert not common_args(config, tmp_path, "cuda", "bfloat16", False)["gradient_checkpointing"]
    # Recipes that do not decide keep it on CUDA, off elsewhere.
    assert common_args(config, tmp_path, "cuda", "bfloat16")["gradient_checkpointing"]
    assert not common_args(config, tmp_path, "cpu", "float32")["gradient_checkpointing"]


def _cuda_decisions(monkeypatch, config, run_decision):
    """Pre-flight's gradient checkpointing on a faked CUDA machine with a roomy GPU and a
    1 MB one, each checked against the run's own decision (`run_decision()`)."""
    from engine import models
    from engine.training import preflight_checks
    from engine.training.preflight import preflight

    monkeypatch.setattr(models, "device_policy",
                        lambda device=None: models.DevicePolicy("cuda", "bfloat16", True))
    for gpu_mb, state in ((80_000.0, "off"), (1.0, "on")):
        monkeypatch.setattr(preflight_checks, "gpu_memory_mb", lambda mb=gpu_mb: mb)
        report = preflight(config)
        assert report.ok, report.errors
        assert report.checkpointing is (state == "on") and report.memory_estimate_mb["total"]
        assert (f"Optimizer: paged_adamw_8bit; gradient checkpointing {state} ({state}: ~"
                in report.text())
        assert run_decision() == (report.checkpointing, report.checkpointing_reason)


def _loaded(tiny_model_dir):
    from types import SimpleNamespace

    from engine import models

    return SimpleNamespace(tokenizer=models.load_tokenizer(str(tiny_model_dir)),
                           info=SimpleNamespace(device="cuda", quantization=None))


def test_dpo_decides_gradient_checkpointing_on_cuda_as_sft_does(monkeypatch, tmp_path,
                                                                tiny_model_dir):
    from engine.training import preference

    data = tmp_path / "dpo.jsonl"
    data.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": q}],
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": bad}]}) + "\n"
        for q, good, bad in (("2+2?", "4", "5"), ("Capital of France?", "Paris", "Rome"))))
    config = TrainConfig(model=str(tiny_model_dir), dataset=str(data), method="dpo",
                         batch_size=2, max_seq_len=64, max_steps=1)
    loaded, rows = _loaded(tiny_model_dir), preference.load_rows(data, "dpo")
    _cuda_decisions(monkeypatch, config,
                    lambda: preference.run_checkpointing(config, loaded, rows))


def test_grpo_decides_gradient_checkpointing_on_cuda_as_sft_does(monkeypatch,
                                                                 tiny_model_dir):
    from engine.training import grpo

    # Generation settings given, so pre-flight fits nothing the run would not.
    config = TrainConfig(model=str(tiny_model_dir), dataset="sample_data/text_to_sql",
                         method="grpo", template="text-to-sql-tuned", limit=4, batch_size=4,
                         num_generations=4, max_completion_length=32, temperature=1.0,
                         max_steps=1)
    loaded, prompts = _loaded(tiny_model_dir), grpo.load_prompts(config)
    _cuda_decisions(monkeypatch, config,
                    lambda: grpo.run_checkpointing(config, loaded, prompts))


# --------------------------------------------------------------------------- the runner lock


def _run_dir(tmp_path, state="stopped", checkpoints=(4,), markers=True, **status) -> RunDir:
    """A run directory; `markers`: written by a runner that marks its checkpoints complete."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_text("method: lora\n")
    for step in checkpoints:
        folder = run.checkpoints_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text("{}")
        rundir.mark_checkpoint_complete(folder, step)
    run.write_status(state, model="m", **({"checkpoint_markers": True} if markers else {}),
                     **status)
    return run


def _holder(run: RunDir) -> subprocess.Popen:
    """Another process that takes the run's lock, as a runner does, and waits."""
    code = ("import sys, time; from engine.training.rundir import RunDir; "
            f"fd = RunDir(__import__('pathlib').Path({str(run.path)!r})).acquire_lock(); "
            "print('locked' if fd is not None else 'busy', flush=True); time.sleep(900)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "900"], start_new_session=True)


def test_the_lock_names_its_holder_and_goes_with_any_exit(tmp_path):
    run = _run_dir(tmp_path)
    assert run.lock_holder() is None
    proc = _holder(run)
    try:
        holder = run.lock_holder()
        assert holder == {"pid": proc.pid, "pid_start": process_start_time(proc.pid)}
        assert run.acquire_lock() is None  # a second taker is refused
        assert run.runner_pid() == proc.pid
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: no clean-up code runs
        proc.wait()
    assert run.lock_holder() is None
    fd = run.acquire_lock()
    assert fd is not None
    run.release_lock(fd)


def test_a_second_runner_on_a_locked_run_leaves_it_alone(tmp_path, monkeypatch, capsys):
    from engine.training import runner

    run = _run_dir(tmp_path, state="running")
    before = run.status_path.read_text()
    monkeypatch.setattr(runner, "LOCK_WAIT", 0.2)
    monkeypatch.setattr(runner, "train", lambda run, flag: pytest.fail("a second runner trained"))
    proc = _holder(run)
    try:
        assert runner.main(run.path) == 3
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert f"already has a runner (pid {proc.pid}" in capsys.readouterr().err
    assert run.status_path.read_text() == before and not run.events_path.exists()


class _Proc:
    def __init__(self, pid: int):
        self.pid = pid


def test_resume_refuses_while_a_runner_holds_the_lock_and_two_resumes_start_one(
        tmp_path, monkeypatch):
    run = _run_dir(tmp_path, state="stopped", pid=999999)
    sleeper = _sleeper()
    spawned: list[list[str]] = []

    def spawn(run, command):
        spawned.append(command)
        return _Proc(sleeper.pid)  # a live stand-in for the new runner, still starting

    monkeypatch.setattr(launch, "_spawn", spawn)
    try:
        proc = _holder(run)
        try:
            with pytest.raises(TunedeckError, match=rf"already has a runner \(pid {proc.pid}"):
                launch.resume(run)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert spawned == []
        launch.resume(run)
        assert len(spawned) == 1 and run.lock_holder() is None  # handed over to the runner
        status = run.read_status()
        assert status["pid"] == sleeper.pid
        assert status["pid_start"] == process_start_time(sleeper.pid)
        # The second resume comes before the new runner has taken the lock: refused all the same.
        with pytest.raises(TunedeckError, match="is still starting"):
            launch.resume(run)
        assert len(spawned) == 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_signals_only_a_process_proven_to_be_the_runner(tmp_path):
    other = _sleeper()  # an unrelated process that now has the pid the status names
    try:
        start = process_start_time(other.pid)
        for stale in ({"pid": other.pid, "pid_start": start + 1},  # a recycled pid
                      {"pid": other.pid}):  # a bare pid, nothing to prove it
            run = RunDir(tmp_path / f"run-{len(stale)}")
            run.path.mkdir()
            run.write_status("running", **stale)
            assert run.stop() is False
            assert other.poll() is None  # still alive: never signalled
        assert run.read_status()["state"] == "running"
        stale_run = RunDir(tmp_path / "run-2")
        assert stale_run.state() == "failed"  # a runner that is not there is not running

        # The same pid with its own start time is the runner before it has taken the lock.
        run.write_status("running", pid=other.pid, pid_start=start)
        assert run.state() == "running" and run.stop() is True
        assert other.wait(10) == -signal.SIGTERM
        assert run.read_status()["state"] == "stopping"
    finally:
        other.kill()
        other.wait()


def test_stop_signals_the_lock_holder_whatever_pid_the_status_names(tmp_path):
    run = _run_dir(tmp_path, state="running", pid=999999, pid_start=1)
    proc = _holder(run)
    try:
        assert run.state() == "running"
        assert run.stop(wait=10) is True
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_cut_short_is_never_latest(tmp_path, monkeypatch, capsys):
    run = _run_dir(tmp_path, state="failed", checkpoints=(4, 8), pid=999999)
    (run.checkpoints_dir / "checkpoint-8" / COMPLETE).unlink()  # cut before its marker
    (run.checkpoints_dir / "checkpoint-12").mkdir()  # killed as the save began
    assert [p.name for p in run.checkpoints()] == ["checkpoint-4", "checkpoint-8",
                                                   "checkpoint-12"]
    assert run.latest_checkpoint().name == "checkpoint-4"
    assert [p.name for p in run.cut_checkpoints()] == ["checkpoint-8", "checkpoint-12"]

    assert main(["runs", "show", str(run.path)]) == 0
    assert "checkpoint-8 (cut short: not resumable)" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(launch, "_spawn", lambda run, command: _Proc(999998))
    assert main(["resume", str(run.path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "checkpoint-8, checkpoint-12 was cut short" in out and "from checkpoint-4" in out
    assert run.read_status()["resumed_from"] == "checkpoint-4"

    # Nothing complete at all: resume says why instead of starting from a broken folder.
    (run.checkpoints_dir / "checkpoint-4" / COMPLETE).unlink()
    run.write_status("failed", pid=999999)
    with pytest.raises(TunedeckError, match=r"no complete checkpoint.*checkpoint-4.*cut short"):
        launch.resume(run)


def test_checkpoints_from_before_the_markers_stay_resumable(tmp_path):
    run = _run_dir(tmp_path, checkpoints=(), markers=False)
    for step, state in ((4, "{}"), (8, '{"global_st')):  # the second cut mid-write
        folder = run.checkpoints_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(state)
    assert run.latest_checkpoint().name == "checkpoint-4"
    run.adopt_checkpoints()  # what a runner does first: from now on markers decide
    assert (run.checkpoints_dir / "checkpoint-4" / COMPLETE).is_file()
    assert run.read_status()["checkpoint_markers"] is True
    assert [p.name for p in run.cut_checkpoints()] == ["checkpoint-8"]


# --------------------------------------------------------------------------- a full disk


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_status_write_on_a_full_disk_is_reported_as_such(tmp_path, monkeypatch, capsys):
    from engine.training import runner

    run = launch.create_run(TrainConfig(method="lora", dataset=str(SENTIMENT)))
    fsync = os.fsync

    def train(run, stop_flag):
        # The disk fills up mid-run: the next status write cannot finish its temporary copy.
        monkeypatch.setattr(os, "fsync", _disk_full)
        run.write_status("running", step=3)

    monkeypatch.setattr(runner, "train", train)
    assert runner.main(run.path) == 1
    assert not list(run.path.glob(".*.tmp"))  # the temporary copy went with the failure
    status = run.read_status()  # written in place, where the atomic write had no room
    assert status["state"] == "failed"
    assert status["error"] == "disk full while writing status.json — free space and resume"
    monkeypatch.setattr(os, "fsync", fsync)  # space freed
    assert main(["runs", "show", run.id]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "failed" in out and "disk full while writing status.json" in out


def test_a_runner_that_could_not_record_its_end_is_not_shown_as_running(tmp_path):
    run = _run_dir(tmp_path, state="running", pid=999999, pid_start=12345)
    summary = launch.run_summary(run)
    assert summary["state"] == "failed"
    assert "without recording why" in summary["error"] and "train.log" in summary["error"]

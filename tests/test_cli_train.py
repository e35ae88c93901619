"""`tunedeck train / runs / stop / resume` through the real command line entry point."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cli.main import main

SENTIMENT = Path(__file__).resolve().parents[1] / "sample_data" / "sentiment"


def _config(tmp_path, model_dir, **extra) -> Path:
    lines = {"model": str(model_dir), "dataset": str(SENTIMENT), "method": "lora",
             "limit": 12, "batch_size": 2, "max_seq_len": 96, "max_steps": 3, **extra}
    path = tmp_path / "run.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def test_train_without_config_lists_the_examples(capsys):
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    for name in ("sql.yaml", "sentiment-lora.yaml", "arithmetic-full.yaml"):
        assert name in out
    assert "auto on sample_data/text_to_sql" in out


def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("method: lora\nlearning_rat: 1\n")
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunedeck: ") and "learning_rat" in err and "Traceback" not in err


def test_dry_run_prints_the_preflight(tmp_path, tiny_model_dir, capsys):
    assert main(["train", str(_config(tmp_path, tiny_model_dir)), "max_seq_len=128",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Pre-flight: OK" in out and "[[<|im_end|>]]" in out and "Steps: 3" in out
    assert not list(Path(tmp_path / "home").glob("runs/*"))  # nothing started


def test_accelerate_command_is_one_accelerate_accepts(tmp_path, capsys):
    from accelerate.commands.launch import launch_command_parser

    from engine.training.launch import accelerate_command

    cmd = accelerate_command(tmp_path / "run", 2)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.num_processes == 2 and args.module and args.training_script == "engine.training"
    assert args.training_script_args == [str(tmp_path / "run")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_detaches_then_runs_watch_show_stop_resume(tmp_path, tiny_model_dir, capsys):
    started = time.monotonic()
    assert main(["train", str(_config(tmp_path, tiny_model_dir)), "name=cli"]) == 0
    out = capsys.readouterr().out
    run_id = out.split("Started run ", 1)[1].split()[0]
    assert f"tunedeck runs watch {run_id}" in out
    from engine.training.rundir import open_run

    run = open_run(run_id)
    # Returned while the runner was still starting (its imports alone take seconds).
    assert run.read_status()["state"] in ("starting", "running")
    assert main(["runs", "watch", run_id]) == 0  # follows until the run ends
    watched = capsys.readouterr().out
    assert "step     3  loss" in watched and f"Run {run_id}: done" in watched
    assert time.monotonic() - started < 590

    assert main(["runs"]) == 0
    listed = capsys.readouterr().out
    assert "done" in listed and "3/3" in listed
    assert main(["runs", "show", "cli"]) == 0  # a unique part of the id is enough
    assert "adapter:" in capsys.readouterr().out
    assert main(["stop", run_id]) == 1
    assert "not running" in capsys.readouterr().out
    assert main(["resume", run_id]) == 1
    assert "checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------- launch / resume
# `_spawn` is replaced by a fake, so these check the bookkeeping around the child, not the child.


class _FakeProc:
    pid = 4242


def _fake_spawn(monkeypatch, runner_pid: int | None = None) -> list[list[str]]:
    """Record the commands; `runner_pid`: the child writes its own status before `_spawn`
    returns, as a quick runner does."""
    from engine.training import launch

    commands: list[list[str]] = []

    def spawn(run, command):
        commands.append(command)
        if runner_pid is not None:
            run.write_status("running", pid=runner_pid)
        return _FakeProc()

    monkeypatch.setattr(launch, "_spawn", spawn)
    return commands


def _count_status_reads(monkeypatch) -> list[int]:
    from engine.training.rundir import RunDir

    reads = [0]
    original = RunDir.read_status

    def counted(self):
        reads[0] += 1
        return original(self)

    monkeypatch.setattr(RunDir, "read_status", counted)
    return reads


def _stopped_run(tmp_path, state: str = "failed", **status):
    from engine.training.rundir import RunDir

    run = RunDir(tmp_path / "run")
    (run.checkpoints_dir / "checkpoint-4").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-4" / "trainer_state.json").write_text("{}")  # complete
    run.config_path.write_text("method: lora\n")
    run.write_status(state, model="m", **status)
    return run


@pytest.mark.parametrize("runner_pid, state, pid", [
    (None, "starting", 4242),  # the runner has not written yet: the launcher records the pid
    (777, "running", 777),  # the runner's own record, written during the spawn, is kept
])
def test_launch_records_the_pid_only_when_the_runner_has_not(monkeypatch, runner_pid, state,
                                                             pid):
    from engine.training import launch
    from engine.training.config import TrainConfig

    commands = _fake_spawn(monkeypatch, runner_pid)
    config = TrainConfig(model="some-model", dataset=str(SENTIMENT), method="lora")
    run = launch.launch(config, check=False)
    assert commands == [launch.runner_command(run.path)]
    status = run.read_status()
    assert (status["state"], status["pid"]) == (state, pid)


@pytest.mark.parametrize("launcher, processes", [("python", 1), ("accelerate", 3)])
def test_resume_relaunches_with_the_runs_launcher(monkeypatch, tmp_path, launcher, processes):
    from engine.training import launch

    run = _stopped_run(tmp_path, launcher=launcher, num_processes=processes, pid=999999,
                       error="killed")
    commands = _fake_spawn(monkeypatch)
    reads = _count_status_reads(monkeypatch)
    assert launch.resume(run) is run
    # Once before the spawn, once after it (the runner may have written meanwhile), and once
    # inside each of the two `write_status` calls.
    assert reads[0] == 4
    expected = (launch.accelerate_command(run.path, processes) if launcher == "accelerate"
                else launch.runner_command(run.path))
    assert commands == [expected]
    status = run.read_status()
    assert status["state"] == "starting" and status["pid"] == 4242 and status["error"] is None
    assert status["resumed_from"] == "checkpoint-4" and status["launcher"] == launcher


def test_resume_keeps_the_pid_the_runner_wrote(monkeypatch, tmp_path):
    from engine.training import launch

    run = _stopped_run(tmp_path, state="stopped")
    _fake_spawn(monkeypatch, runner_pid=777)
    launch.resume(run)
    status = run.read_status()
    assert (status["state"], status["pid"]) == ("running", 777)


def test_resume_refuses_an_active_or_finished_run(monkeypatch, tmp_path):
    import os

    from engine.errors import TunedeckError
    from engine.training import launch

    commands = _fake_spawn(monkeypatch)
    run = _stopped_run(tmp_path, state="running", pid=os.getpid())
    with pytest.raises(TunedeckError, match=r"is still running; stop it first"):
        launch.resume(run)
    run.write_status("done")
    with pytest.raises(TunedeckError, match="has finished; there is nothing to resume"):
        launch.resume(run)
    assert commands == []

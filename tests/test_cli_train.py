"""`tunedeck train / runs / stop / resume` through the real command line entry point."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli.main import main
from engine.training.config import TrainConfig

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
    assert "Processes: 1; global batch 2 = 2 per device x 1 process x 1 accumulation step" in out
    assert "Optimizer: adamw_torch; gradient checkpointing off (off on cpu" in out
    # Two processes: the launch, the global batch and half the steps of an epoch-long run.
    assert main(["train", str(_config(tmp_path, tiny_model_dir)), "max_steps=-1",
                 "--num-processes", "2", "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--multi_gpu" in out and "--num_processes 2" in out
    assert "Processes: 2 (accelerate); global batch 4 = 2 per device x 2 processes" in out
    assert "Steps: 3;" in out  # 12 rows, 4 a step
    assert "2 processes share this machine's CPU cores" in out
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


# --------------------------------------------------------------------------- several processes


def test_the_shipped_accelerate_configs_are_listed_and_accelerate_takes_them():
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    from engine.training.accelerate_launch import LaunchOptions, accelerate_configs

    shipped = {c.name: c for c in accelerate_configs()}
    assert set(shipped) == {"ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"}
    assert all(c.summary and c.path.is_file() for c in shipped.values())
    for name, kind in [("ddp", "multi_gpu"), ("fsdp", "use_fsdp"),
                       ("deepspeed-zero2", "use_deepspeed"), ("deepspeed-zero3", "use_deepspeed")]:
        cmd = LaunchOptions.plan(None, 4, name).command("RUN")
        args, _, _ = _validate_launch_command(launch_command_parser().parse_args(cmd[3:]))
        assert getattr(args, kind) and args.num_processes == 4 and args.mixed_precision == "no"


@pytest.mark.parametrize("argv, says", [
    (["--launcher", "python", "--num-processes", "2"], "need --launcher accelerate"),
    (["--accelerate-config", "zero9"], "neither a shipped accelerate config (ddp, "),
    (["--accelerate-config", "{bad}"], "is not valid YAML"),
    (["--accelerate-config", "{list}"], "holds none"),
    (["--accelerate-config", "{unknown}"], "accelerate cannot read this config"),
    (["--accelerate-config", "{three}", "--num-processes", "2"],
     "contradicts num_processes: 3 in"),
    (["--num-processes", "2", "--num-machines", "2"], "needs --main-process-ip"),
    (["--num-processes", "2", "--num-machines", "2", "--machine-rank", "2"],
     "--machine-rank 2 must be in 0 … 1"),
    (["--num-processes", "3", "--num-machines", "2", "--main-process-ip", "10.0.0.1"],
     "must be a multiple of --num-machines 2"),
    (["--num-processes", "2", "--foreground"], "--foreground trains in this one process"),
])
def test_launch_options_that_contradict_each_other_are_refused(tmp_path, capsys, argv, says):
    files = {"bad": "distributed_type: [MULTI_GPU\n", "list": "- MULTI_GPU\n",
             "unknown": "distributed_type: MULTI_GPU\nnum_gpus: 2\n",
             "three": "distributed_type: MULTI_GPU\nnum_processes: 3\n"}
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    argv = [a.format(**{n: str(tmp_path / f"{n}.yaml") for n in files}) for a in argv]
    assert main(["train", "max_steps=1", *argv, "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunedeck: ") and says in err and "Traceback" not in err


def test_launch_checks_refuse_what_would_fail_on_the_gpus(monkeypatch, tmp_path):
    from engine import models
    from engine.training import accelerate_launch as al

    def check(name, processes=2, device=None, **settings):
        config = TrainConfig(model="m", dataset=str(SENTIMENT), **{"method": "lora", **settings})
        options = al.LaunchOptions.plan(None, processes, name)
        return al.check_launch(options, config, device)

    errors, _ = check("deepspeed-zero2", device="cpu")
    assert any("deepspeed package is not installed; pip install deepspeed" in e for e in errors)
    assert any("DeepSpeed shards the model over GPUs and this machine trains on cpu" in e
               for e in errors)
    assert any("FSDP shards the model over GPUs" in e for e in check("fsdp", device="cpu")[0])
    assert "DDP needs at least 2 processes" in check("ddp", processes=1, device="cpu")[0][0]
    assert check("ddp", device="cpu") == ([], [check("ddp", device="cpu")[1][0]])
    bf16 = tmp_path / "bf16.yaml"
    bf16.write_text("distributed_type: MULTI_GPU\nmixed_precision: bf16\n")
    (error,) = check(str(bf16), device="cpu", precision="fp32")[0]
    assert "mixed_precision: bf16 there, but the run trains in fp32" in error
    # A CUDA machine with 2 GPUs, seen through the device policy.
    monkeypatch.setattr(models, "device_policy",
                        lambda device=None: models.DevicePolicy("cuda", "bfloat16", True))
    monkeypatch.setattr(al, "gpu_count", lambda: 2)
    assert "this machine has 2 GPU(s) for its 4 process(es)" in check("ddp", processes=4)[0][0]
    # QLoRA on 2 GPUs: each rank loads onto its own GPU, FSDP shards the bf16-stored weights.
    assert check("ddp", method="qlora") == ([], [])
    errors, warnings = check("fsdp", method="qlora")
    assert errors == [] and len(warnings) == 1
    assert "paged_adamw_8bit fails when a checkpoint is saved" in warnings[0]
    assert check("fsdp", method="qlora", optimizer="adamw_torch") == ([], [])
    assert check("ddp", method="lora", precision="bf16") == ([], [])
    # A loader that stored them as uint8 is still refused for FSDP, before anything loads.
    import torch

    monkeypatch.setattr(models, "quantization_config", lambda *_a, **_k: SimpleNamespace(
        bnb_4bit_quant_storage=torch.uint8))
    (error,) = check("fsdp", method="qlora")[0]
    assert "bnb_4bit_quant_storage=bfloat16" in error and "as torch.uint8 here" in error
    assert check("ddp", method="qlora") == ([], [])  # DDP does not shard them


def test_resume_relaunches_with_the_recorded_accelerate_config(monkeypatch, tmp_path):
    from engine.errors import TunedeckError
    from engine.training import launch
    from engine.training.accelerate_launch import LaunchOptions

    own = tmp_path / "own.yaml"
    own.write_text("distributed_type: MULTI_GPU\nmain_process_port: 29611\n")
    options = LaunchOptions.plan(None, 2, str(own), main_process_ip="127.0.0.1")
    run = _stopped_run(tmp_path, launch=options.to_status(), launcher="accelerate",
                       num_processes=2)
    commands = _fake_spawn(monkeypatch)
    launch.resume(run)
    assert commands == [options.command(run.path)]
    assert commands[0][3:5] == ["--config_file", str(own)]
    assert "--main_process_port" not in commands[0]  # the file's port stands
    run.write_status("failed", pid=None)
    own.unlink()
    with pytest.raises(TunedeckError, match=r"cannot be started the way it was: .*own.yaml"):
        launch.resume(run)


def test_the_report_counts_steps_and_batches_over_the_processes():
    from engine.training.preflight_checks import PreflightReport, set_world

    config = TrainConfig(model="m", dataset=str(SENTIMENT), batch_size=2, grad_accum=3,
                         max_steps=0, epochs=2)
    report = PreflightReport(ok=True, steps=10, batch_rows=30)
    set_world(report, config, 4, "accelerate, config ddp")
    assert (report.world_size, report.global_batch, report.steps) == (4, 24, 3)
    assert ("Processes: 4 (accelerate, config ddp); global batch 24 = 2 per device x 4 "
            "processes x 3 accumulation steps") in report.text()
    bare = set_world(PreflightReport(ok=True, steps=10), config, 4)  # rows not known
    assert bare.steps == 3


def test_a_failed_ranks_note_explains_a_run_whose_rank_zero_was_killed(tmp_path):
    import json

    from engine.training import launch

    # NCCL: rank 0 waited on the dead rank until torchrun's agent killed it, recording nothing.
    run = _stopped_run(tmp_path, state="running", pid=999999, pid_start=1)
    (run.path / "failed-rank-1.json").write_text(json.dumps(
        {"rank": 1, "error": "RuntimeError: CUDA error: an illegal memory access", "t": 0}))
    summary = launch.run_summary(run)
    assert summary["state"] == "failed"
    assert summary["error"] == "rank 1 failed: RuntimeError: CUDA error: an illegal memory access"

"""Runs on the tiny model that go wrong on purpose: a loss that turns NaN and a
disk that fills up while a checkpoint is written. Each ends "failed" with the reason, keeps the
last good checkpoint, saves no adapter, and resumes from the newest complete checkpoint."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest
from in_process import run_in_process

from cli.main import main
from engine.training import launch, runner
from engine.training.config import TrainConfig

SENTIMENT = Path(__file__).resolve().parents[1] / "sample_data" / "sentiment"


def _logs(run):
    return [e for e in run.read_events() if e["type"] == "log"]


def _nan_from(trainer_class, monkeypatch, step: int) -> None:
    """From optimizer step `step` on the loss is NaN, as a broken row or too high a rate makes it.
    (`trainer_class.compute_loss` is restored by the test's monkeypatch, or by `_fixed`.)"""
    original = trainer_class.compute_loss
    _ORIGINALS[trainer_class] = original

    def compute_loss(self, model, inputs, *args, **kwargs):
        out = original(self, model, inputs, *args, **kwargs)
        if self.state.global_step + 1 < step:
            return out
        if isinstance(out, tuple):
            return (out[0] * math.nan, *out[1:])
        return out * math.nan

    monkeypatch.setattr(trainer_class, "compute_loss", compute_loss)


_ORIGINALS: dict = {}


def _fixed(trainer_class, monkeypatch) -> None:
    monkeypatch.setattr(trainer_class, "compute_loss", _ORIGINALS[trainer_class])


def test_a_nan_loss_fails_the_run_keeps_the_good_checkpoint_and_saves_no_adapter(
        tiny_model_dir, monkeypatch, capsys):
    from engine.training.trainers import FastSFTTrainer

    cfg = TrainConfig(model=str(tiny_model_dir), dataset=str(SENTIMENT), method="lora",
                      limit=16, batch_size=2, max_seq_len=96, max_steps=8, save_every=2,
                      warmup_ratio=0.0, learning_rate=1e-3)
    run = launch.create_run(cfg)
    _nan_from(FastSFTTrainer, monkeypatch, step=5)
    assert run_in_process(run) == 1
    status = run.read_status()
    assert status["state"] == "failed"
    error = status["error"]
    assert "loss became nan at step 5" in error and "Lower the learning rate" in error
    assert "check the data" in error and "checkpoint-4, is kept" in error
    logs = _logs(run)
    assert [e["step"] for e in logs] == [1, 2, 3, 4, 5]  # stopped at the step it diverged
    assert all(math.isfinite(e["loss"]) for e in logs[:4])
    assert math.isnan(logs[-1]["loss"])  # logged as it is: not 0.0, not dropped
    assert "NaN" in run.events_path.read_text().splitlines()[-2]
    assert [p.name for p in run.complete_checkpoints()] == ["checkpoint-2", "checkpoint-4"]
    assert not run.checkpoints_dir.joinpath("checkpoint-6").exists()
    assert not run.adapter_dir.exists()  # no NaN adapter passed off as the result
    assert main(["runs", "show", run.id]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "failed" in out and "last loss nan" in out and "loss became nan at step 5" in out

    # Fixed (here: the cause removed), it resumes from the good checkpoint and finishes.
    _fixed(FastSFTTrainer, monkeypatch)
    assert run_in_process(run) == 0
    assert run.read_status()["state"] == "done"
    assert [e["step"] for e in _logs(run)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(math.isfinite(e["loss"]) for e in _logs(run)[5:])
    assert (run.adapter_dir / "adapter_config.json").is_file()


def test_a_disk_full_checkpoint_is_reported_and_resume_passes_over_it(tiny_model_dir,
                                                                       monkeypatch, capsys):
    from transformers import Trainer

    cfg = TrainConfig(model=str(tiny_model_dir), dataset=str(SENTIMENT), method="lora",
                      limit=16, batch_size=2, max_seq_len=96, max_steps=6, save_every=2,
                      warmup_ratio=0.0)
    run = launch.create_run(cfg)
    original = Trainer._save_optimizer_and_scheduler

    def save_optimizer(self, output_dir):
        if self.state.global_step == 4:  # the adapter is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", output_dir + "/optimizer.pt")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save_optimizer)
    assert run_in_process(run) == 1
    status = run.read_status()
    assert status["state"] == "failed"
    assert status["error"] == "disk full while writing checkpoint-4 — free space and resume"
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-4"]
    assert run.latest_checkpoint().name == "checkpoint-2"  # the cut one is never "latest"
    assert main(["runs", "show", run.id]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "disk full while writing checkpoint-4 — free space and resume" in out
    assert "checkpoint-4 (cut short: not resumable)" in out

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", original)  # space freed
    assert run_in_process(run) == 0, run.read_status()
    log = " ".join(capsys.readouterr().out.split())
    assert "checkpoint-4 was cut short" in log and "resuming from checkpoint-2" in log
    # Steps 3-4 run again from checkpoint-2; the events already hold them once.
    assert [e["step"] for e in _logs(run)] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in run.complete_checkpoints()] == ["checkpoint-4", "checkpoint-6"]
    assert run.read_status()["state"] == "done"


@pytest.mark.parametrize("filename", [None, "/x/adapter/adapter_model.safetensors"])
def test_a_full_disk_is_named_as_such_wherever_it_happens(filename):
    from engine.training.rundir import write_failure

    err = OSError(errno.ENOSPC, "No space left on device", filename)
    assert str(write_failure(err, "the final adapter")) == (
        "disk full while writing the final adapter — free space and resume")
    assert runner.describe(err).startswith("disk full while writing ")

"""Real runs: QLoRA on the default model (in process), and the detached runner's mechanics on
the tiny model: kill -9 → resume, save-now, SIGTERM → stopped → resume, no gap, no duplicate."""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import pytest

from engine.training import launch
from engine.training.config import TrainConfig

SENTIMENT = Path(__file__).resolve().parents[1] / "sample_data" / "sentiment"

pytestmark = pytest.mark.slow


def _logs(run):
    return [e for e in run.read_events() if e["type"] == "log"]


def _wait(predicate, timeout=240.0, what="condition", run=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if run is not None and run.state() == "failed":
            raise AssertionError(f"run failed: {run.log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(900)
def test_qlora_run_on_the_default_model(default_model_dir, default_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.training.runner import main

    cfg = TrainConfig(model=str(default_model_dir), dataset=str(SENTIMENT), method="qlora",
                      limit=40, batch_size=2, max_seq_len=128, max_steps=20,
                      learning_rate=3e-4, warmup_ratio=0.0, sample_every=10, sample_k=1)
    run = launch.create_run(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(run.path) == 0, run.log_path.read_text()[-2000:]
    assert run.state() == "done"
    # Sampling at step 10 (eval mode) must leave the 4-bit layers differentiable.
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    logs = _logs(run)
    assert [e["step"] for e in logs] == list(range(1, 21))
    losses = [e["loss"] for e in logs]
    ema, smoothed = losses[0], []
    for loss in losses:
        ema = 0.7 * ema + 0.3 * loss
        smoothed.append(ema)
    assert smoothed[-1] < 0.6 * smoothed[2], losses
    assert all(e["tokens_per_s"] and e["mem_mb"] for e in logs[1:])
    samples = [e for e in run.read_events() if e["type"] == "sample"]
    assert [s["step"] for s in samples] == [10, 20]
    assert all(s["prompt"] and s["reference"] in ("positive", "negative", "neutral")
               for s in samples)
    status = run.read_status()
    assert status["state"] == "done" and status["total_steps"] == 20 and status["step"] == 20

    # The adapter is plain PEFT: it loads on the full-precision base and changes its output.
    base = AutoModelForCausalLM.from_pretrained(str(default_model_dir))
    tuned = PeftModel.from_pretrained(base, str(run.adapter_dir)).eval()
    tok = default_model.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": "Classify: the box was crushed."}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        before = default_model.model(ids).logits[0, -1]
        after = tuned(ids).logits[0, -1]
    assert (before - after).abs().max().item() > 0.1


@pytest.mark.timeout(900)
def test_kill_resume_save_now_stop_resume_on_tiny_model(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("TUNEDECK_STEP_DELAY", "0.4")  # the tiny model is too quick to catch
    cfg = TrainConfig(model=str(tiny_model_dir), dataset=str(SENTIMENT), method="lora",
                      limit=40, batch_size=2, max_seq_len=96, max_steps=16, save_every=4,
                      learning_rate=1e-3)
    run = launch.launch(cfg, check=False)
    assert run.read_status()["state"] == "starting"  # launch returned before training began

    # kill -9 after the step-4 checkpoint, leaving a half-written event line behind.
    _wait(lambda: run.latest_checkpoint() is not None and _logs(run)
          and _logs(run)[-1]["step"] >= 5, what="step 5", run=run)
    os.killpg(os.getpgid(run.read_status()["pid"]), signal.SIGKILL)
    _wait(lambda: not run.is_active(), 30, "the killed runner to be seen dead")
    with open(run.events_path, "a") as f:
        f.write('{"type": "log", "step": 9')
    assert run.state() == "failed"
    killed_at = _logs(run)[-1]["step"]

    # Resume: appends to the same events file; a save-now request checkpoints off-schedule.
    launch.resume(run)
    _wait(lambda: _logs(run)[-1]["step"] > killed_at, what="the resumed run to log", run=run)
    run.request_save()
    _wait(lambda: any(int(p.name.split("-")[1]) % 4 for p in run.checkpoints())
          or run.state() == "done", what="the save-now checkpoint", run=run)
    assert any(int(p.name.split("-")[1]) % 4 for p in run.checkpoints())
    assert not run.save_now_path.exists()

    # SIGTERM: a checkpoint at the current step, then "stopped".
    assert launch.stop(run)
    _wait(lambda: not run.is_active(), 120, "the run to stop")
    assert run.state() == "stopped"
    stopped_at = _logs(run)[-1]["step"]
    assert stopped_at < 16
    assert run.latest_checkpoint().name == f"checkpoint-{stopped_at}"

    launch.resume(run)
    _wait(lambda: not run.is_active() and run.state() in ("done", "failed"), what="the end")
    assert run.state() == "done", run.log_path.read_text()[-2000:]
    steps = [e["step"] for e in _logs(run)]
    assert steps == list(range(1, 17))  # no gap, no duplicate across kill, stop and resumes
    states = [e["state"] for e in run.read_events() if e["type"] == "state"]
    assert states == ["running", "running", "stopped", "running", "done"]
    assert (run.adapter_dir / "adapter_config.json").is_file()
    summary = launch.run_summary(run)
    assert summary["state"] == "done" and summary["step"] == 16 and summary["last_loss"]

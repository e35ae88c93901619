"""The runner's side of the new-user walk (findings 1, 2, 3, 13): evaluation and sampling report
their progress and give way to a stop at the step boundary; save-now says when it wrote; the
bitsandbytes kernel warning is one line of our own. In process, on the tiny model."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest

from engine.training import launch
from engine.training.config import TrainConfig

pytestmark = pytest.mark.slow


def make_dataset(folder: Path, n_train: int = 24, n_val: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)

    def row(i: int) -> str:
        return json.dumps({"prompt": f"How many rows are in table {i}?",
                           "completion": f"SELECT count(*) FROM t{i}"})

    (folder / "train.jsonl").write_text("\n".join(row(i) for i in range(n_train)) + "\n")
    (folder / "validation.jsonl").write_text(
        "\n".join(row(1000 + i) for i in range(n_val)) + "\n")
    return folder


def tiny_config(model: Path, data: Path, **overrides) -> TrainConfig:
    values = dict(model=str(model), dataset=str(data), method="lora", batch_size=4,
                  max_seq_len=64, max_steps=6, warmup_ratio=0.0, save_every=0)
    return TrainConfig(**{**values, **overrides})


def test_a_stop_during_evaluation_skips_the_rest_and_checkpoints_that_step(
        tiny_model_dir, tmp_path, monkeypatch):
    from engine.training import callbacks
    from engine.training.runner import main
    from engine.training.trainers import FastSFTTrainer

    data = make_dataset(tmp_path / "data", n_val=12)
    run = launch.create_run(tiny_config(tiny_model_dir, data, eval_every=1, max_steps=4))
    predicted: list[int] = []  # the step of each evaluation batch the model really ran
    seen_status: list[dict] = []
    real_predict = FastSFTTrainer.prediction_step

    def counting_predict(self, *args, **kwargs):
        predicted.append(self.state.global_step)
        return real_predict(self, *args, **kwargs)

    real_hook = callbacks.RunEventsCallback.on_prediction_step

    def hook(self, args, state, control, **kwargs):
        real_hook(self, args, state, control, **kwargs)
        seen_status.append(run.read_status())
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what `x` sends, mid-evaluation

    monkeypatch.setattr(FastSFTTrainer, "prediction_step", counting_predict)
    monkeypatch.setattr(callbacks.RunEventsCallback, "on_prediction_step", hook)
    monkeypatch.setattr(callbacks, "PHASE_STATUS_SECONDS", 0.0)
    assert main(run.path) == 0, run.log_path.read_text()[-3000:]

    assert run.state() == "stopped"
    # The first evaluation ran whole (12 rows, 3 batches); the second stopped after 1 of 3.
    assert predicted.count(1) == 3 and predicted.count(2) == 1
    assert [c.name for c in run.checkpoints()] == ["checkpoint-2"]
    evals = [e for e in run.read_events() if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [1]  # the cut-short evaluation reports no loss
    assert evals[0]["rows"] == 12 and evals[0]["seconds"] > 0
    during = [s for s in seen_status if s.get("phase") == "evaluating"]
    assert during[0]["phase_total"] == 12 and during[0]["step"] == 1
    assert [s["phase_done"] for s in during if s["step"] == 1] == [4, 8, 12]
    status = run.read_status()
    assert status["phase"] is None and status["eval_rows"] == 12 and status["eval_seconds"] > 0


def test_a_stop_during_sampling_ends_the_generation_and_checkpoints(
        tiny_model_dir, tmp_path, monkeypatch):
    from engine.training import callbacks
    from engine.training.runner import main

    data = make_dataset(tmp_path / "data", n_val=4)
    run = launch.create_run(tiny_config(tiny_model_dir, data, sample_every=1, sample_k=3,
                                        max_steps=3))
    generated: list[int] = []  # new tokens of each generation
    real_generate = callbacks.RunEventsCallback.generate

    def generate(self, model, conv):
        if len(generated) == 3:  # the first generation of the second round (step 2)
            os.kill(os.getpid(), signal.SIGTERM)
        text = real_generate(self, model, conv)
        generated.append(len(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
        return text

    monkeypatch.setattr(callbacks.RunEventsCallback, "generate", generate)
    assert main(run.path) == 0, run.log_path.read_text()[-3000:]
    assert run.state() == "stopped"
    samples = [e for e in run.read_events() if e["type"] == "sample"]
    # Step 1 wrote its 3 samples; at step 2 the stop cut the first generation short (at most
    # one token), wrote none of it, and the other two were never started.
    assert [s["step"] for s in samples] == [1, 1, 1]
    assert len(generated) == 4 and generated[3] <= 1
    assert [c.name for c in run.checkpoints()] == ["checkpoint-2"]


def test_save_now_writes_a_checkpoint_and_says_so_in_the_log(tiny_model_dir, tmp_path,
                                                              monkeypatch, capsys):
    from engine.training import callbacks
    from engine.training.runner import main

    data = make_dataset(tmp_path / "data")
    run = launch.create_run(tiny_config(tiny_model_dir, data, max_steps=3))
    real_step_end = callbacks.RunEventsCallback.on_step_end

    def step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            run.request_save()  # what `c` does
        real_step_end(self, args, state, control, **kwargs)

    monkeypatch.setattr(callbacks.RunEventsCallback, "on_step_end", step_end)
    assert main(run.path) == 0, run.log_path.read_text()[-3000:]
    assert run.state() == "done"
    assert [c.name for c in run.checkpoints()] == ["checkpoint-1"]
    assert not run.save_now_path.exists()
    assert "save now: wrote checkpoint-1" in capsys.readouterr().out


def test_the_bitsandbytes_kernel_warning_becomes_one_line_of_ours(caplog, monkeypatch):
    from engine import notices

    notices.explain_library_noise()
    notices.explain_library_noise()  # idempotent: one filter
    logger = logging.getLogger(notices.BNB_CPU_LOGGER)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(notices._BitsandbytesKernelNotice, "said", False)
    for _ in range(2):  # as bitsandbytes words it (backends/cpu/ops.py)
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please "
                       "make sure you already `pip install kernels` and the kernels >= 0.11.1",
                       ModuleNotFoundError("No module named 'kernels'"))
    logger.warning("something else bitsandbytes has to say")
    # What the handlers receive (pytest's capture is one; in the runner it is train.log).
    err = "\n".join(r.getMessage() for r in caplog.records)
    assert "kernels-community" not in err and "No module named" not in err
    assert err.count("bitsandbytes: the optional faster CPU 4-bit kernel") == 1
    assert "Training and evaluation are not affected" in err
    assert "something else bitsandbytes has to say" in err


def test_peft_s_read_of_a_deprecated_alias_is_not_shown_to_the_user():
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from engine.notices import peft_wrapping

    def wrap() -> None:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2,
                                             num_key_value_heads=1))
        get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))

    with warnings.catch_warnings(record=True) as bare:
        warnings.simplefilter("always")
        wrap()
    # The cause is real: PEFT asks transformers for `is_gradient_checkpointing`.
    assert any("is_gradient_checkpointing" in str(w.message) for w in bare)
    with warnings.catch_warnings(record=True) as wrapped:
        warnings.simplefilter("always")
        with peft_wrapping():
            wrap()
            warnings.warn("any other warning", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in wrapped if w.category is FutureWarning] == ["any other warning"]

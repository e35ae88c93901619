"""Ratings → TRL trainers: each export trains one step; a short DPO run goes through the runner."""

from __future__ import annotations

import json
import math

import pytest
from in_process import run_in_process

from engine import paths
from engine.errors import ConfigError, TunedeckError
from engine.ratings import RatingStore
from engine.training.config import TrainConfig

QUESTIONS = [("What is 2+2?", "4", "5"), ("Capital of France?", "Paris", "Rome"),
             ("Colour of the sky?", "Blue", "Green"), ("What is 3+3?", "6", "7")]


def fill(store: RatingStore) -> None:
    """Every kind of judgment: stars, thumbs, corrections and A/B choices."""
    for i, (q, good, bad) in enumerate(QUESTIONS):
        messages = [{"role": "user", "content": q}]
        g = store.add_completion(source="manual", prompt=q, messages=messages, completion=good)
        b = store.add_completion(source="manual", prompt=q, messages=messages, completion=bad)
        if i % 2:
            store.rate(g, stars=5)
            store.rate(b, stars=1)
        else:
            store.rate(g, thumbs=1)
            store.rate(b, thumbs=-1, ideal=good + ".")
        a1 = store.add_completion(source="ab", prompt=q, messages=messages, completion=good + "!")
        a2 = store.add_completion(source="ab", prompt=q, messages=messages, completion=bad + "?")
        store.choose(store.add_pair(a1, a2), "a")


@pytest.fixture
def exports(tmp_path):
    out = {}
    with RatingStore() as store:
        fill(store)
        for fmt in ("sft", "dpo", "kto"):
            out[fmt] = tmp_path / f"{fmt}.jsonl"
            report = store.export(fmt, out[fmt])
            assert report.rows > 0 and report.conversational
    return out


def config(tiny_model_dir, dataset, method, **kw) -> TrainConfig:
    base = dict(model=str(tiny_model_dir), dataset=str(dataset), method=method, max_steps=1,
                batch_size=2, lora_r=4, lora_alpha=8, warmup_ratio=0.0, max_seq_len=64)
    return TrainConfig(**{**base, **kw})


def test_sft_export_trains_one_step_in_sfttrainer(exports, tiny_model_dir, tmp_path):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from engine import models

    loaded = models.load(str(tiny_model_dir))
    data = load_dataset("json", data_files=str(exports["sft"]), split="train")
    assert set(data.column_names) == {"prompt", "completion"}
    trainer = SFTTrainer(model=loaded.model, processing_class=loaded.tokenizer, train_dataset=data,
                         args=SFTConfig(output_dir=str(tmp_path / "o"), max_steps=1,
                                        per_device_train_batch_size=2, report_to="none",
                                        use_cpu=True, disable_tqdm=True, save_strategy="no",
                                        max_length=64, logging_steps=1))
    result = trainer.train()
    assert trainer.state.global_step == 1 and math.isfinite(result.training_loss)


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_export_trains_one_step(method, exports, tiny_model_dir, tmp_path):
    from trl import DPOTrainer, KTOTrainer

    from engine.training.preference import build_preference_trainer

    cfg = config(tiny_model_dir, exports[method], method)
    cfg.validate(device_checks=False)
    trainer = build_preference_trainer(cfg, tmp_path / "run", [])
    assert isinstance(trainer, DPOTrainer if method == "dpo" else KTOTrainer)
    trainer.train()
    logs = trainer.state.log_history[0]
    assert trainer.state.global_step == 1 and math.isfinite(logs["loss"])
    if method == "dpo":
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(logs)
    else:  # KTO logs the side(s) a batch holds, and its KL estimate
        assert "kl" in logs and {"rewards/chosen", "rewards/rejected"} & set(logs)


def test_a_short_dpo_run_through_the_runner(exports, tiny_model_dir):
    """Exported ratings → `method: dpo` run directory → events with rewards → an adapter."""
    from peft import PeftModel

    from engine import models
    from engine.training.rundir import RunDir

    cfg = config(tiny_model_dir, exports["dpo"], "dpo", max_steps=4, learning_rate=5e-3,
                 sample_every=4, sample_k=1, lora_dropout=0.0)
    run = RunDir(paths.ensure_dir(paths.runs_dir()) / "20261129-000000-dpo-abcd")
    run.path.mkdir()
    run.config_path.write_text(cfg.resolved().to_yaml(), encoding="utf-8")
    assert run_in_process(run) == 0
    assert run.read_status()["state"] == "done", run.read_status()
    events = run.read_events()
    logs = [e for e in events if e["type"] == "log"]
    assert [e["step"] for e in logs] == [1, 2, 3, 4]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
                "rewards/accuracies"):
        assert all(isinstance(e[key], float) for e in logs), key
    # The policy moved towards the chosen answers (the first step is the reference itself).
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert logs[-1]["rewards/margins"] > 0 and logs[-1]["loss"] < logs[0]["loss"]
    assert [e["step"] for e in events if e["type"] == "sample"] == [4]
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert not (run.adapter_dir / "ref").exists()
    tuned = PeftModel.from_pretrained(models.load(str(tiny_model_dir)).model, str(run.adapter_dir))
    assert list(tuned.peft_config) == ["default"]


def test_kto_from_an_sft_adapter_keeps_it_as_the_reference(exports, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from engine import models
    from engine.training.adapter_ref import resolve_adapter
    from engine.training.preference import build_preference_trainer

    # An "SFT run" with a finished adapter, referred to by its run id.
    sft = paths.ensure_dir(paths.runs_dir()) / "20261129-000000-sft-abcd"
    base = models.load(str(tiny_model_dir)).model
    get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM",
                                    init_lora_weights=False)).save_pretrained(sft / "adapter")
    assert resolve_adapter(sft.name) == (sft / "adapter").resolve()
    cfg = config(tiny_model_dir, exports["kto"], "kto", adapter=sft.name)
    cfg.validate(device_checks=False)
    trainer = build_preference_trainer(cfg, tmp_path / "run", [])
    assert set(trainer.model.peft_config) == {"default", "ref"}
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all(".default." in n for n in trained)
    trainer.train()
    assert trainer.state.global_step == 1


def test_bad_preference_configs_and_data_are_explained(tmp_path, tiny_model_dir):
    from engine.training.preference import load_rows

    with pytest.raises(ConfigError, match="adapter: No run 'no-such-run'.*RUN_ID:checkpoint-N"):
        config(tiny_model_dir, tiny_model_dir / "config.json", "dpo",
               adapter="no-such-run").validate(device_checks=False)
    with pytest.raises(ConfigError, match="beta"):
        config(tiny_model_dir, tiny_model_dir / "config.json", "kto",
               beta=0.0).validate(device_checks=False)
    with pytest.raises(ConfigError, match="batch_size: KTO needs at least 2"):
        config(tiny_model_dir, tiny_model_dir / "config.json", "kto",
               batch_size=1).validate(device_checks=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "completion": "a", "label": True}) + "\n")
    with pytest.raises(TunedeckError, match=r"bad.jsonl line 1: missing field\(s\) chosen, "
                                            "rejected"):
        load_rows(bad, "dpo")
    with pytest.raises(TunedeckError, match="both desirable"):
        load_rows(bad, "kto")
    bad.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}], "chosen": "a",
                               "rejected": "b"}) + "\n")
    with pytest.raises(TunedeckError, match="line 1: field chosen must be lists"):
        load_rows(bad, "dpo")


def test_preflight_for_preference_data(exports, tiny_model_dir):
    from engine.training.preference import preflight_preference

    report = preflight_preference(config(tiny_model_dir, exports["dpo"], "dpo", max_steps=-1,
                                         epochs=2.0, batch_size=4))
    assert report.ok, report.errors
    rows = len(exports["dpo"].read_text().splitlines())
    assert report.train_rows == rows and report.steps == -(-rows // 4) * 2
    trained = "".join(t for t, on in report.example_tokens if on)
    assert trained.startswith("4") and "<|im_end|>" in trained  # the chosen answer + EOS
    assert 0 < report.trainable_params < report.total_params
    failed = preflight_preference(config(tiny_model_dir, exports["dpo"], "kto"))
    assert not failed.ok and "missing field(s) completion, label" in failed.errors[0]


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_a_diverging_preference_run_fails_with_the_step_and_saves_no_adapter(
        exports, tiny_model_dir, monkeypatch, method):
    """The divergence guard holds in every recipe: a NaN loss in DPO / KTO ends the run
    "failed" at that step with the hint, and no NaN adapter is saved as the result."""
    from trl import DPOTrainer, KTOTrainer

    from engine.training.rundir import RunDir

    trainer_class = DPOTrainer if method == "dpo" else KTOTrainer
    original = trainer_class.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        out = original(self, model, inputs, *args, **kwargs)
        if self.state.global_step + 1 < 2:
            return out
        return (out[0] * math.nan, *out[1:]) if isinstance(out, tuple) else out * math.nan

    monkeypatch.setattr(trainer_class, "compute_loss", compute_loss)
    cfg = config(tiny_model_dir, exports[method], method, max_steps=3)
    run = RunDir(paths.ensure_dir(paths.runs_dir()) / f"20261129-000000-{method}-nan1")
    run.path.mkdir()
    run.config_path.write_text(cfg.resolved().to_yaml(), encoding="utf-8")
    assert run_in_process(run) == 1
    status = run.read_status()
    assert status["state"] == "failed"
    assert "loss became nan at step 2" in status["error"]
    assert "Lower the learning rate" in status["error"]
    logs = [e for e in run.read_events() if e["type"] == "log"]
    assert [e["step"] for e in logs] == [1, 2] and math.isnan(logs[-1]["loss"])
    assert not run.adapter_dir.exists()

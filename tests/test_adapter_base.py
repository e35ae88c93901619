"""One adapter, one behaviour: an adapter records the base it was trained against, and whatever
loads it (prompt, eval, export --merge, preference training) loads that base, says so, and warns
or refuses when it cannot."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from adapter_runs import make_run, save_random_lora

from engine import adapter_base, export, models
from engine.adapter_base import RECORD_FILE, BaseRecord
from engine.adapters import AdapterSet, resolve
from engine.errors import TunedeckError
from engine.generation import GenerationParams, Generator

PROMPTS = ["Write a SQL query that lists every customer.", "What is 12 + 30?", "Say hello."]
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def _ids(tokenizer, text: str) -> list[int]:
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                        add_generation_prompt=True)
    return list(out["input_ids"] if not isinstance(out, list) else out)


def _last_logits(model, tokenizer) -> torch.Tensor:
    with torch.inference_mode():
        return torch.stack([model(input_ids=torch.tensor([_ids(tokenizer, p)])).logits[0, -1]
                            for p in PROMPTS])


def _greedy(model, tokenizer, n: int = 12) -> list[str]:
    gen = Generator(model, tokenizer)
    return [gen.generate(_ids(tokenizer, p), GenerationParams(max_new_tokens=n)).text
            for p in PROMPTS]


def _qlora_run(model_dir, name="qlora"):
    """A QLoRA run whose final adapter carries the record the runner writes."""
    run = make_run(model_dir, name=name, quantized=True)
    loaded = models.load(str(model_dir), quantize="4bit")
    adapter_base.write_record(run.adapter_dir, adapter_base.record_for(str(model_dir), loaded))
    return run


@pytest.fixture(scope="module")
def other_weights(tiny_model_dir, tmp_path_factory):
    """The tiny model's architecture and tokenizer with other random weights."""
    from transformers import LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-other")
    torch.manual_seed(123)
    model = LlamaForCausalLM.from_pretrained(str(tiny_model_dir))
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    model.save_pretrained(out)
    for f in tiny_model_dir.iterdir():
        if "token" in f.name or f.suffix == ".jinja":
            shutil.copy(f, out / f.name)
    return out


# --------------------------------------------------------------------------- the record


def test_record_round_trip_fingerprint_and_inference_for_old_runs(tiny_model_dir, other_weights,
                                                                    tmp_path):
    fp = adapter_base.fingerprint(tiny_model_dir)
    assert fp and fp == adapter_base.fingerprint(tiny_model_dir)
    assert fp != adapter_base.fingerprint(other_weights)  # same shapes and sizes, other weights
    assert adapter_base.fingerprint(tmp_path) is None

    run = _qlora_run(tiny_model_dir)
    record = adapter_base.read_record(run.id)
    assert (record.source, record.model, record.fingerprint) == ("recorded", str(tiny_model_dir),
                                                                 fp)
    assert (record.quantization, record.quant_type, record.double_quant,
            record.compute_dtype) == ("4bit", "nf4", True, "float32")
    assert record.describe() == f"4-bit nf4 {tiny_model_dir.name}"

    # An older run without the record: inferred from its config.yaml, checkpoints too.
    old = make_run(tiny_model_dir, name="old", quantized=True, checkpoints=(20,))
    for ref in (old.id, f"{old.id}:checkpoint-20"):
        inferred = adapter_base.read_record(ref)
        assert (inferred.source, inferred.quantization, inferred.fingerprint) == (
            "run config", "4bit", None)
    # A checkpoint of a new run finds the run's record (the runner writes it at the start).
    adapter_base.write_record(old.path, record)
    assert adapter_base.read_record(f"{old.id}:checkpoint-20").fingerprint == fp
    # A LoRA run's base is full precision; a bare folder's base is unknown, and said so.
    assert adapter_base.read_record(make_run(tiny_model_dir).id).quantization is None
    folder = save_random_lora(tiny_model_dir, tmp_path / "bare")
    unknown = adapter_base.plan_base(str(folder))
    assert not unknown.record.known
    assert "not recorded" in unknown.line and "--quantize 4bit" in unknown.line


def test_a_broken_record_is_a_clear_message(tiny_model_dir):
    run = _qlora_run(tiny_model_dir, "broken")
    path = run.adapter_dir / RECORD_FILE
    path.write_text('{"model": "x",\n "quantization": }')
    with pytest.raises(TunedeckError, match=rf"{RECORD_FILE} line 2: not valid JSON .*delete it"):
        adapter_base.read_record(run.id)
    path.write_text(json.dumps({"model": "x", "quantization": "3bit"}))
    with pytest.raises(TunedeckError, match=r"field quantization is '3bit'; it must be null, "
                       r'"4bit" or "8bit"'):
        adapter_base.read_record(run.id)
    path.write_text(json.dumps({"quantization": "4bit"}))
    with pytest.raises(TunedeckError, match="field model is None"):
        adapter_base.read_record(run.id)


# --------------------------------------------------------------------------- the plan


def test_plan_loads_the_trained_base_and_overrides_warn_with_the_drop(tiny_model_dir,
                                                                      monkeypatch):
    run = _qlora_run(tiny_model_dir, "plan")
    plan = adapter_base.plan_base(run.id)
    assert plan.line == (f"adapter {run.id} (final) trained on 4-bit nf4 {tiny_model_dir.name}; "
                         "loading that base")
    assert (plan.quantization, plan.quant_type, plan.double_quant, plan.warnings) == (
        "4bit", "nf4", True, [])
    full = adapter_base.plan_base(run.id, quantize="none")
    assert full.quantization is None and full.line.endswith("instead")
    assert "16.7%" in full.warnings[0] and "0% on the full-precision one" in full.warnings[0]
    lora = make_run(tiny_model_dir, name="lora")
    rounded = adapter_base.plan_base(lora.id, quantize="4bit")
    assert "never saw weights rounded to 4 bits" in rounded.warnings[0]
    with pytest.raises(TunedeckError, match="quantize: '2bit'"):
        adapter_base.plan_base(run.id, quantize="2bit")

    # 4-bit unavailable here: the full-precision base, with a warning naming the drop; asking
    # for 4-bit explicitly is refused.
    monkeypatch.setattr(models, "probe_4bit", lambda device=None: (False, "no kernel"))
    fallback = adapter_base.plan_base(run.id)
    assert fallback.quantization is None
    assert fallback.warnings[0].startswith("4-bit is not available here (no kernel)")
    assert "16.7%" in fallback.warnings[0]
    with pytest.raises(TunedeckError, match="4-bit is not available here"):
        adapter_base.plan_base(lora.id, quantize="4bit")


def test_other_base_weights_are_refused_unless_forced(tiny_model_dir, other_weights, tmp_path):
    run = _qlora_run(tiny_model_dir, "fingerprint")
    with pytest.raises(TunedeckError, match=r"has other weights .*--force-base"):
        adapter_base.load_with_adapter(str(other_weights), run.id)
    warnings: list[str] = []
    loaded = adapter_base.load_with_adapter(str(other_weights), run.id, force=True,
                                            warn=warnings.append)
    assert "Used anyway, as forced" in warnings[0]
    assert loaded.info.quantization == "4bit"

    # The base is gone: a clear message, not a traceback.
    record = adapter_base.read_record(run.id)
    missing = tmp_path / "moved-away"
    adapter_base.write_record(run.adapter_dir, BaseRecord(**{
        **{k: v for k, v in record.as_dict().items() if k != "version"},
        "model": str(missing)}))
    with pytest.raises(TunedeckError, match=r"was trained on .*moved-away, which is not here: "
                       r".*--model"):
        adapter_base.load_with_adapter(None, run.id)


# --------------------------------------------------------------------------- loading


def test_prompt_loads_a_qlora_adapter_on_its_4bit_base(tiny_model_dir, capsys):
    from cli.main import main

    run = _qlora_run(tiny_model_dir, "prompt")
    notes: list[str] = []
    loaded = adapter_base.load_with_adapter(None, run.id, note=notes.append)
    assert loaded.info.quantization == "4bit" and notes == [adapter_base.plan_base(run.id).line]
    assert main(["prompt", "--input", "Hi", "--max-new-tokens", "4", "--adapter", run.id]) == 0
    err = capsys.readouterr().err
    assert f"trained on 4-bit nf4 {tiny_model_dir.name}; loading that base" in err
    assert main(["prompt", "--input", "Hi", "--max-new-tokens", "4", "--adapter", run.id,
                 "--quantize", "none"]) == 0
    assert "warning:" in capsys.readouterr().err


def test_eval_loads_the_4bit_base_for_a_qlora_adapter_without_quantize(tiny_model_dir):
    from engine.evaluation.evaluator import EvalSpec, load_session

    run = _qlora_run(tiny_model_dir, "eval")
    lines: list[str] = []
    full = models.load(str(tiny_model_dir))
    # Handed the full-precision model (the TUI's), the session loads the 4-bit base instead.
    session = load_session(EvalSpec(adapter=run.id), full, progress=lines.append)
    assert session.loaded is not full and session.loaded.info.quantization == "4bit"
    assert any("trained on 4-bit nf4" in line for line in lines)
    assert session.warnings == []
    session.close()
    # A LoRA adapter trained on that model uses it as it is.
    lora = make_run(tiny_model_dir, name="eval-lora")
    session = load_session(EvalSpec(adapter=lora.id), full)
    assert session.loaded is full
    session.close()
    # --quantize none is an override: it warns, naming the drop.
    session = load_session(EvalSpec(adapter=run.id, quantize="none"), full)
    assert session.loaded is full and "16.7%" in session.warnings[0]
    session.close()


def test_merged_qlora_export_reproduces_4bit_base_plus_adapter(tiny_model_dir):
    """The merge goes into the de-quantized 4-bit weights: the merged folder answers like
    4-bit base + adapter, and unlike the full-precision base + adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = _qlora_run(tiny_model_dir, "merge")
    said: list[str] = []
    out = export.export_merged(run.id, "tiny-qlora-merged", progress=said.append).path
    assert any("trained on 4-bit nf4" in s for s in said)
    assert any(s.startswith("De-quantizing the 4bit weights to float32") for s in said)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert not any("4bit" in type(m).__name__ for m in merged.modules())

    four = adapter_base.load_with_adapter(None, run.id)
    assert four.info.quantization == "4bit"
    assert _greedy(merged, tokenizer) == _greedy(four.model, four.tokenizer)
    # On a CPU with AVX512-BF16, bitsandbytes answers inference through a packed bf16 kernel
    # (about 1e-3 apart); training de-quantizes in the compute dtype, as the merge does. Held to
    # that path, the merged folder is the 4-bit base + adapter to fp32 rounding.
    four = adapter_base.load_with_adapter(None, run.id)
    for module in four.model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    torch.testing.assert_close(_last_logits(merged, tokenizer),
                               _last_logits(four.model, four.tokenizer), rtol=1e-4, atol=1e-4)
    # What the merge used to do (the original weights) answers differently.
    full = models.load(str(tiny_model_dir))
    AdapterSet.of(full).attach(run.id)
    gap = (_last_logits(merged, tokenizer) - _last_logits(full.model, full.tokenizer)).abs()
    assert gap.max().item() > 1e-3  # ten times the tolerance above
    card = (out / "README.md").read_text()
    assert "merged into the de-quantized weights of the 4-bit nf4" in card
    marker = json.loads((out / export.EXPORT_MARKER).read_text())
    assert marker["merged_into"].startswith("the de-quantized weights of the 4-bit nf4")


def test_exported_adapter_keeps_its_base_record(tiny_model_dir):
    run = make_run(tiny_model_dir, name="carry", quantized=True, checkpoints=(20,))
    out = export.export_adapter(run.id, "carried", checkpoint="20").path
    record = adapter_base.read_record(str(out))  # outside any run now
    assert record.source == "recorded" and record.quantization == "4bit"
    assert resolve(str(out)).kind == "folder"


@pytest.mark.slow
def test_tiny_qlora_run_records_its_base(tiny_model_dir):
    """The runner writes the record into the run directory and the final adapter."""
    import signal
    from pathlib import Path

    from engine.training import launch
    from engine.training.config import TrainConfig
    from engine.training.runner import main

    sentiment = Path(__file__).resolve().parents[1] / "sample_data" / "sentiment"
    cfg = TrainConfig(model=str(tiny_model_dir), dataset=str(sentiment), method="qlora",
                      limit=8, batch_size=4, max_seq_len=96, max_steps=2, eval_every=0,
                      sample_every=0)
    run = launch.create_run(cfg)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert main(run.path) == 0, run.log_path.read_text()[-2000:]
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    for folder in (run.path, run.adapter_dir):
        record = adapter_base.parse_record(folder / RECORD_FILE)
        assert record.quantization == "4bit" and record.quant_type == "nf4"
        assert record.fingerprint == adapter_base.fingerprint(tiny_model_dir)
    assert adapter_base.plan_base(run.id).quantization == "4bit"


def test_preference_training_from_a_qlora_adapter_starts_on_its_4bit_base(tiny_model_dir,
                                                                           tmp_path):
    from engine.errors import ConfigError
    from engine.training.config import TrainConfig
    from engine.training.preference import build_preference_trainer, load_base

    rows = [{"prompt": [{"role": "user", "content": q}],
             "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": b}]}
            for q, a, b in (("2+2?", "4", "5"), ("Capital of France?", "Paris", "Rome"))]
    data = tmp_path / "dpo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = _qlora_run(tiny_model_dir, "sft")
    cfg = TrainConfig(model=str(tiny_model_dir), dataset=str(data), method="dpo", max_steps=1,
                      batch_size=2, lora_r=4, lora_alpha=8, warmup_ratio=0.0, max_seq_len=64,
                      adapter=run.id)
    lines: list[str] = []
    loaded = load_base(cfg, progress=lines.append)
    assert loaded.info.quantization == "4bit" and "trained on 4-bit nf4" in lines[0]
    from engine.training.lora_policy import starts_quantized

    # Pre-flight's memory estimate knows it too, from the adapter's base record.
    assert starts_quantized(cfg) and not starts_quantized(TrainConfig(method="dpo"))
    trainer = build_preference_trainer(cfg, tmp_path / "run", [], loaded=loaded)
    trainer.train()
    assert trainer.state.global_step == 1

    other = TrainConfig(**{**cfg.__dict__, "model": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"^adapter: .*the base given for it, .*nowhere, "
                       r"is not here"):
        load_base(other)


@pytest.mark.slow
def test_real_model_merged_qlora_answers_sql_like_4bit_base_plus_adapter(default_model_dir,
                                                                          tmp_path):
    """The default model: a (small, random) QLoRA adapter merged into the de-quantized nf4
    weights answers three sample text_to_sql questions exactly like 4-bit base + adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.data import load_examples
    from engine.strategies import StrategyConfig, build_prompt, example_values
    from engine.templates import get_template

    four = models.load(str(default_model_dir), quantize="4bit")
    torch.manual_seed(0)
    peft = get_peft_model(four.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():  # a nudge, not noise: the answers stay SQL-like
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    folder = tmp_path / "adapter"
    peft.save_pretrained(str(folder))
    adapter_base.write_record(folder, adapter_base.record_for(str(default_model_dir), four))
    out = export.export_merged(str(folder), tmp_path / "merged").path

    merged = AutoModelForCausalLM.from_pretrained(str(out))
    tuned = adapter_base.load_with_adapter(None, str(folder))
    tokenizer = tuned.tokenizer
    template = get_template("instruction")
    questions = load_examples("sample_data/text_to_sql", split="test")[:3]
    prompts = [build_prompt(template, example_values(q), tokenizer, StrategyConfig()).input_ids
               for q in questions]
    params = GenerationParams(max_new_tokens=40)
    a = [Generator(merged, tokenizer).generate(p, params).text for p in prompts]
    b = [Generator(tuned.model, tokenizer).generate(p, params).text for p in prompts]
    assert a == b and all(a)

"""Export: merged models load with plain transformers and answer exactly like base + adapter;
exported adapters load with plain PEFT and carry a model card."""

from __future__ import annotations

import json

import pytest
import torch
from adapter_runs import make_run

from cli.main import main
from engine import export, model_catalog, models, paths
from engine.adapters import AdapterSet
from engine.errors import TunedeckError
from engine.generation import GenerationParams, Generator

PROMPTS = ["Write a SQL query that lists every customer.", "Is this review positive? 'Great!'",
           "What is 12 + 30?", "Say hello."]
GREEDY = GenerationParams(max_new_tokens=16)
# PEFT asks transformers a deprecated question; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def _ids(tokenizer, text: str) -> list[int]:
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                        add_generation_prompt=True)
    return list(out["input_ids"] if not isinstance(out, list) else out)


def _greedy(model, tokenizer) -> list[str]:
    gen = Generator(model, tokenizer)
    return [gen.generate(_ids(tokenizer, p), GREEDY).text for p in PROMPTS]


def _last_logits(model, tokenizer) -> torch.Tensor:
    batch = [_ids(tokenizer, p) for p in PROMPTS]
    with torch.inference_mode():
        return torch.stack([model(input_ids=torch.tensor([ids])).logits[0, -1] for ids in batch])


def _with_adapter(model_dir, ref):
    loaded = models.load(str(model_dir))
    AdapterSet.of(loaded).attach(ref)
    return loaded


def test_merged_export_equals_base_plus_adapter(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    run = make_run(tiny_model_dir, name="merge")
    result = export.export_merged(run.id, "tiny-merged")
    out = paths.exports_dir() / "tiny-merged"  # a bare name lands in the exports folder
    assert result.path == out and result.kind == "merged"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "chat_template.jinja", "README.md", export.EXPORT_MARKER} <= set(result.files)
    assert not list(out.parent.glob(".tiny-merged.tmp-*"))

    merged = AutoModelForCausalLM.from_pretrained(str(out))  # plain transformers, nothing else
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert not any("lora" in name for name, _ in merged.named_modules())
    reference = _with_adapter(tiny_model_dir, run.id)
    assert _greedy(merged, tokenizer) == _greedy(reference.model, reference.tokenizer)
    torch.testing.assert_close(_last_logits(merged, tokenizer),
                               _last_logits(reference.model, reference.tokenizer),
                               rtol=1e-4, atol=1e-4)
    base = models.load(str(tiny_model_dir))
    assert not torch.allclose(_last_logits(merged, tokenizer),
                              _last_logits(base.model, base.tokenizer))

    # Tokenizer, chat template and stop tokens travel with it.
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)
    generation = GenerationConfig.from_pretrained(str(out))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert generation.eos_token_id in (im_end, [im_end])
    assert generation.pad_token_id == tokenizer.pad_token_id
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and run.id in card
    marker = json.loads((out / export.EXPORT_MARKER).read_text())
    assert marker["kind"] == "merged" and marker["run_id"] == run.id

    # The Models list (and the TUI's picker) offers it as a model.
    entry = next(e for e in model_catalog.available_models() if e.name == "tiny-merged")
    assert entry.kind.startswith("exported") and entry.ref == str(out)
    assert models.load(entry.ref).info.name == "tiny-merged"


# A QLoRA adapter merges into its de-quantized 4-bit base: tests/test_adapter_base.py.


def test_adapter_export_loads_with_plain_peft_and_has_a_model_card(tiny_model_dir):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    run = make_run(tiny_model_dir, name="card", checkpoints=(20,))
    (run.checkpoints_dir / "checkpoint-20" / "optimizer.pt").write_bytes(b"trainer state")
    result = export.export_adapter(run.id, "tiny-adapter")
    out = result.path
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(result.files)
    reference = _with_adapter(tiny_model_dir, run.id)
    expected = _last_logits(reference.model, reference.tokenizer)

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    plain = PeftModel.from_pretrained(base, str(out))
    torch.testing.assert_close(_last_logits(plain, reference.tokenizer), expected)
    auto = AutoPeftModelForCausalLM.from_pretrained(str(out))  # finds the base by itself
    torch.testing.assert_close(_last_logits(auto, reference.tokenizer), expected)

    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ")
    for needle in (str(tiny_model_dir), "library_name: peft", "sample_data/text_to_sql",
                   "| lora_r | 8 |", "| eval_loss | 1.5 |", "| train_loss | 1 |",
                   "| step | 40 |", "training examples: 100", run.id):
        assert needle in card, needle

    # A checkpoint: the adapter only (no trainer state), metrics up to its step.
    ckpt = export.export_adapter(run.id, "tiny-ckpt", checkpoint="20").path
    assert not (ckpt / "optimizer.pt").exists()
    card = (ckpt / "README.md").read_text()
    assert "checkpoint at step 20" in card and "| step | 20 |" in card
    assert "| eval_loss | 2 |" in card


def test_adapter_export_points_peft_at_a_real_base_folder(tiny_model_dir):
    run = make_run(tiny_model_dir, name="pointer")
    config_path = run.adapter_dir / "adapter_config.json"
    data = json.loads(config_path.read_text())
    data["base_model_name_or_path"] = "smollm2-135m-instruct"  # a tunedeck name, not a path
    config_path.write_text(json.dumps(data))
    out = export.export_adapter(run.id, "pointer").path
    exported = json.loads((out / "adapter_config.json").read_text())
    assert exported["base_model_name_or_path"] == str(tiny_model_dir)


def test_existing_target_is_refused_unless_forced(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, name="again")
    target = tmp_path / "out"
    export.export_adapter(run.id, target)
    (target / "stale.txt").write_text("old")
    with pytest.raises(TunedeckError, match="already exists.*--force"):
        export.export_adapter(run.id, target)
    export.export_adapter(run.id, target, force=True)
    assert not (target / "stale.txt").exists()
    assert (target / "adapter_model.safetensors").is_file()


def test_cli_export_adapter_and_merge(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the adapters table on one line per row
    run = make_run(tiny_model_dir, name="cli")
    assert main(["export", run.id, "--adapter", "cli-adapter"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(paths.exports_dir() / "cli-adapter")
    assert "Exported" in out.err and "PeftModel.from_pretrained" in out.err
    assert main(["export", run.id, "--merge", "cli-merged"]) == 0
    assert capsys.readouterr().out.strip() == str(paths.exports_dir() / "cli-merged")
    assert (paths.exports_dir() / "cli-merged" / "config.json").is_file()

    assert main(["adapters"]) == 0
    assert run.id in capsys.readouterr().out
    # Mistakes are one line, exit 1.
    assert main(["export", run.id, "--adapter", "cli-adapter"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", f"{run.id}:checkpoint-3", "--merge", "x"]) == 1
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and len(err.strip().splitlines()) == 1

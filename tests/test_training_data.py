"""Tokenization with completion-only labels, pre-flight checks, length-sorted batches and the
fast loss (LM head only at trained positions) against the model's own loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.training import data as tdata
from engine.training.config import TrainConfig
from engine.training.trainers import LengthSortedBatchSampler

SENTIMENT = Path(__file__).resolve().parents[1] / "sample_data" / "sentiment"


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_dir))


def test_conversation_from_seed_example():
    conv = tdata.to_conversation({"instruction": "Classify.", "prompt": "Great shoes!",
                                  "completion": "positive", "line": 3})
    assert conv.prompt == [{"role": "user", "content": "Classify.\n\nGreat shoes!"}]
    assert conv.completion == [{"role": "assistant", "content": "positive"}]


def test_example_without_completion_names_the_line_and_the_fix():
    with pytest.raises(Exception, match="line 7.*mapping"):
        tdata.to_conversation({"prompt": "hi", "line": 7})


def test_labels_train_exactly_the_completion_and_its_eos(tokenizer):
    conv = tdata.to_conversation({"prompt": "Great shoes!", "completion": "positive"})
    row = tdata.tokenize(tokenizer, conv, max_seq_len=256)
    ids, labels = row["input_ids"], row["labels"]
    trained = [i for i, label in zip(ids, labels, strict=True) if label != tdata.IGNORE]
    assert tokenizer.decode(trained) == "positive<|im_end|>"
    assert ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id
    # One BOS, from the template (no second one from tokenizing the rendered text again).
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    # The masked prefix is exactly what generation is prompted with.
    assert ids[: labels.index(trained[0])] == tdata.prompt_ids(tokenizer, conv)


def test_preflight_shows_masking_and_estimates(default_model_dir):
    cfg = TrainConfig(model=str(default_model_dir), dataset=str(SENTIMENT), method="lora",
                      limit=16, batch_size=4, max_steps=-1, epochs=2, max_seq_len=128)
    from engine.training.preflight import preflight

    report = preflight(cfg)
    assert report.ok, report.errors
    assert report.train_rows == 16 and report.eval_rows > 0 and report.steps == 8
    trained = "".join(t for t, on in report.example_tokens if on)
    assert trained.endswith("<|im_end|>") and trained[: -len("<|im_end|>")] in (
        "positive", "negative", "neutral")
    assert any("pad == eos" in w for w in report.warnings)
    assert 0 < report.trainable_params < report.total_params
    assert report.memory_estimate_mb["total"] > report.memory_estimate_mb["weights"] > 0
    text = report.text()
    assert "[[<|im_end|>]]" in text and "trainable" in text


def test_preflight_fails_loudly_when_every_label_is_masked(default_model_dir):
    from engine.training.preflight import preflight

    cfg = TrainConfig(model=str(default_model_dir), dataset=str(SENTIMENT), method="lora",
                      limit=8, max_seq_len=16)
    report = preflight(cfg)
    assert not report.ok
    assert any("Every label is masked" in e for e in report.errors)


def test_preflight_qlora_weights_are_a_third_of_lora(default_model_dir):
    from engine.training.preflight import preflight

    base = dict(model=str(default_model_dir), dataset=str(SENTIMENT), limit=8, max_seq_len=128)
    lora = preflight(TrainConfig(method="lora", **base)).memory_estimate_mb["weights"]
    qlora = preflight(TrainConfig(method="qlora", **base)).memory_estimate_mb["weights"]
    assert qlora < 0.45 * lora  # embeddings stay full precision; the linear layers are 4-bit


def test_sampler_batches_hold_similar_lengths_and_cover_everything():
    import random

    rng = random.Random(1)
    lengths = [rng.randint(10, 200) for _ in range(64)]
    sampler = LengthSortedBatchSampler(lengths, batch_size=8, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(64))
    blocks = [order[i:i + 8] for i in range(0, 64, 8)]
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in blocks)
    assert padding / sum(lengths) < 0.1
    assert list(LengthSortedBatchSampler(lengths, 8, seed=3)) == order  # resumable: same order
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new epoch shuffles the blocks


def test_fast_loss_equals_the_models_own_loss(tiny_model_dir, tmp_path):
    """Logits only at trained positions must give the same loss as the full forward."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from engine.training.trainers import FastSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    convs = tdata.conversations(SENTIMENT, {}, "train", limit=6)
    dataset, _ = tdata.build_dataset(tokenizer, convs, 128)
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, use_cpu=True,
                     bf16=False, gradient_checkpointing=False, report_to="none",
                     max_length=128, shuffle_dataset=False, disable_tqdm=True)
    trainer = FastSFTTrainer(model=model, args=args, train_dataset=dataset,
                             processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
    with torch.no_grad():
        fast = trainer.compute_loss(model, dict(batch))
        reference = model(**batch).loss
    assert fast.item() == pytest.approx(reference.item(), rel=1e-4)


def test_4bit_layers_keep_a_trainable_layout_through_eval(tiny_model_dir):
    """Sampling mid-run (eval mode) must not repack 4-bit weights into bitsandbytes' CPU
    inference layout, whose kernel has no gradient: training after it would be silently wrong."""
    import torch

    from engine import models
    from engine.training.trainers import keep_4bit_layout_trainable

    model = models.load(str(tiny_model_dir), quantize="4bit").model
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert layers
    keep_4bit_layout_trainable(model)
    model.eval()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4]]))
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)

"""Tokenization with completion-only labels, pre-flight checks, length-sorted batches and the
fast loss (LM head only at trained positions) against the model's own loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.training import data as tdata
from engine.training.batching import LengthSortedBatchSampler
from engine.training.config import TrainConfig

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


def test_two_ranks_take_the_rows_of_one_process_with_the_global_batch(monkeypatch):
    """Blocks are cut at the global batch: accelerate hands each rank whole per-device batches
    in turn (BatchSamplerShard), so rank 0 then rank 1 of a step read the 1-process batch of
    2 x 2 rows, in its order, every step and epoch; no row twice or missed."""
    import random

    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    rng = random.Random(5)
    lengths = [rng.randint(10, 200) for _ in range(24)]

    def batches(per_device, processes, rank, epoch):
        sampler = LengthSortedBatchSampler(lengths, per_device, seed=3, processes=processes)
        loader = DataLoader(range(len(lengths)), batch_size=per_device, sampler=sampler)
        # As the trainer's accelerator prepares it (split_batches off), and sets each epoch.
        loader = prepare_data_loader(loader, num_processes=processes, process_index=rank,
                                     put_on_device=False)
        loader.set_epoch(epoch)
        return [batch.tolist() for batch in loader]

    for epoch in (0, 1):
        one = batches(4, 1, 0, epoch)
        rank0, rank1 = batches(2, 2, 0, epoch), batches(2, 2, 1, epoch)
        assert len(rank0) == len(rank1) == len(one) == 6
        assert [a + b for a, b in zip(rank0, rank1, strict=True)] == one
    # Left unnamed (the benchmark), the processes come from torchrun's WORLD_SIZE.
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert list(LengthSortedBatchSampler(lengths, 2, seed=3)) == list(
        LengthSortedBatchSampler(lengths, 4, seed=3, processes=1))


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


def test_shared_prefix_gives_the_per_row_loss_and_gradients(tiny_model_dir, tmp_path,
                                                            monkeypatch):
    """The prompt prefix every row shares runs once; loss and every LoRA gradient must equal
    the per-row computation."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from engine.training import batching, trainers

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                      target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # zero at init would leave lora_A without a gradient to compare
            torch.nn.init.normal_(param, std=0.02)
    convs = tdata.conversations(SENTIMENT, {}, "train", limit=8)
    dataset, _ = tdata.build_dataset(tokenizer, convs, 128)
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True,
                     bf16=False, gradient_checkpointing=False, report_to="none",
                     max_length=128, shuffle_dataset=False, disable_tqdm=True)
    trainer = trainers.FastSFTTrainer(model=model, args=args, train_dataset=dataset,
                                      processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    keep = batch["labels"][:, 1:] != -100
    prefix = batching.shared_prefix_length(batch, keep)
    assert prefix >= batching.MIN_SHARED_PREFIX  # the instruction is shared: the path is taken

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.requires_grad}

    shared_loss, shared = loss_and_grads()
    monkeypatch.setattr(batching, "MIN_SHARED_PREFIX", 10**9)
    assert batching.shared_prefix_length(batch, keep) == 0
    row_loss, per_row = loss_and_grads()
    assert shared_loss == pytest.approx(row_loss, rel=1e-5)
    assert len(shared) > 0
    for name, grad in per_row.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(shared[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prefix_stops_at_the_first_difference_label_or_padding():
    import torch

    from engine.training.batching import MIN_SHARED_PREFIX, shared_prefix_length

    n = MIN_SHARED_PREFIX
    ids = torch.arange(3 * n).repeat(3, 1)
    ids[1, 2 * n] = -1  # rows part at 2n
    mask = torch.ones_like(ids)
    keep = torch.zeros(3, 3 * n - 1, dtype=torch.bool)
    keep[:, -3:] = True
    assert shared_prefix_length({"input_ids": ids, "attention_mask": mask}, keep) == 2 * n
    keep[2, n + 3] = True  # a trained position inside the common part ends the prefix there
    assert shared_prefix_length({"input_ids": ids, "attention_mask": mask}, keep) == n + 3
    keep[2, n + 3] = False
    mask[0, n + 5:] = 0  # padding is never shared
    assert shared_prefix_length({"input_ids": ids, "attention_mask": mask}, keep) == n + 5
    keep[:, 2] = True  # too short to be worth a second decoder call
    assert shared_prefix_length({"input_ids": ids, "attention_mask": mask}, keep) == 0
    keep[:, 2] = False
    assert shared_prefix_length({"input_ids": ids[:1], "attention_mask": mask[:1]},
                                keep[:1]) == 0  # one row: nothing to share
    packed = {"input_ids": ids, "attention_mask": mask, "position_ids": ids}
    assert shared_prefix_length(packed, keep) == 0


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


def test_preflight_counts_padding_and_the_shared_prefix_of_sorted_batches():
    from engine.training.batching import batch_layout

    ignore = -100
    shared = list(range(100, 120))  # 20 tokens every row starts with

    def row(tail: int, prompt_extra: int = 0) -> dict[str, list[int]]:
        ids = shared + [1] * prompt_extra + [7] * tail
        labels = [ignore] * (len(shared) + prompt_extra) + [7] * tail
        return {"input_ids": ids, "labels": labels}

    rows = [row(4), row(4), row(6), row(6)]
    padding, spared = batch_layout(rows, batch_size=2)
    real = 2 * 24 + 2 * 26
    assert padding == 0
    # Each batch of two runs the common part once, up to the last prompt position (19), whose
    # hidden state predicts the first trained token and so is the row's own: 19 spared a batch.
    assert spared == pytest.approx(2 * 19 / real)
    rows = [row(4), row(8)]
    assert batch_layout(rows, batch_size=2)[0] == pytest.approx(4 / 52)  # 24 + 28 tokens
    assert batch_layout(rows, batch_size=1)[1] == 0  # one row per batch: nothing shared
    # A trained label inside the common part: the head must run there, so it is not shared.
    early = {"input_ids": shared + [7] * 4, "labels": [ignore] * 5 + shared[5:] + [7] * 4}
    assert batch_layout([early, row(4)], batch_size=2)[1] == 0


def test_fast_loss_runs_in_the_trainers_mixed_precision(tiny_model_dir, tmp_path):
    """The fast path calls the decoder past the prepared model's forward, where accelerate puts
    its autocast: with bf16 on, the linear layers must still see bf16 inputs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from engine.training.trainers import FastSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    convs = tdata.conversations(SENTIMENT, {}, "train", limit=4)
    dataset, _ = tdata.build_dataset(tokenizer, convs, 128)
    seen = {}
    for bf16 in (False, True):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
        args = SFTConfig(output_dir=str(tmp_path / str(bf16)), per_device_train_batch_size=2,
                         use_cpu=True, bf16=bf16, report_to="none", max_length=128,
                         shuffle_dataset=False, disable_tqdm=True)
        trainer = FastSFTTrainer(model=model, args=args, train_dataset=dataset,
                                 processing_class=tokenizer)
        layer = model.model.layers[0].mlp.down_proj
        dtypes: list = []
        hook = layer.register_forward_hook(
            lambda _m, _i, out, seen_here=dtypes: seen_here.append(out.dtype))
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.compute_loss(model, dict(batch))  # the first also checks the head, in fp32
        dtypes.clear()
        loss = trainer.compute_loss(model, dict(batch))
        hook.remove()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        seen[bf16] = set(dtypes)
    assert seen == {False: {torch.float32}, True: {torch.bfloat16}}


def test_evaluation_takes_the_fast_path_in_length_order(tiny_model_dir, tmp_path):
    """Evaluate keeps only the loss (no compute_metrics): the fast path serves it, with the same
    loss as the model's own; rows go in length order; asking for metrics gets real logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from engine.training.trainers import FastSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    convs = tdata.conversations(SENTIMENT, {}, "train", limit=12)
    dataset, _ = tdata.build_dataset(tokenizer, convs, 128)
    args = SFTConfig(output_dir=str(tmp_path), per_device_eval_batch_size=4, use_cpu=True,
                     bf16=False, report_to="none", max_length=128, disable_tqdm=True)
    trainer = FastSFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset,
                             processing_class=tokenizer)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = list(trainer._get_eval_sampler(dataset))
    assert sorted(order) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths)
    batch = next(iter(trainer.get_eval_dataloader()))
    model.eval()
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
        reference = model(**batch).loss
    assert set(outputs) == {"loss"}
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4)
    assert "eval_loss" in trainer.evaluate()
    trainer.compute_metrics = lambda _p: {}
    with torch.no_grad():
        _, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    assert outputs.logits.shape[-1] == model.config.vocab_size


def test_packed_rows_train_as_if_they_were_apart(tiny_model_dir, tmp_path):
    """packing: examples share rows with their own position_ids; transformers must keep them
    from attending to each other, so the loss equals that of the examples padded apart."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from engine.training.batching import PackedCollator
    from engine.training.trainers import FastSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    convs = tdata.conversations(SENTIMENT, {}, "train", limit=12)
    dataset, _ = tdata.build_dataset(tokenizer, convs, 128, completion_only=False)
    packed_ds = tdata.pack(dataset, 256)
    assert len(packed_ds) < len(dataset) and sum(map(len, packed_ds["seq_lengths"])) == 12
    collate = PackedCollator(tokenizer.pad_token_id)
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, use_cpu=True,
                     bf16=False, report_to="none", max_length=256, shuffle_dataset=False,
                     disable_tqdm=True)
    trainer = FastSFTTrainer(model=model, args=args, train_dataset=packed_ds,
                             processing_class=tokenizer, data_collator=collate)
    packed = next(iter(trainer.get_train_dataloader()))
    assert set(packed) == {"input_ids", "labels", "position_ids", "real_tokens"}
    assert packed["input_ids"].shape[0] == 2  # rows stay rows
    # Each example alone, padded: what the packed rows must reproduce.
    examples = []
    for ids, labels, pos in zip(packed["input_ids"], packed["labels"], packed["position_ids"],
                                strict=True):
        starts = [i for i in range(len(ids)) if pos[i] == 0]
        bounds = [*starts, len(ids)]
        for a, b in zip(bounds, bounds[1:], strict=False):
            if b - a > 1:  # not a pad token
                examples.append((ids[a:b], labels[a:b]))
    apart = collate([{"input_ids": ids.tolist(), "labels": labels.tolist()}
                     for ids, labels in examples])
    assert "attention_mask" in apart and int(apart["attention_mask"].sum()) == int(
        packed["real_tokens"])
    model.train()
    with torch.no_grad():
        packed_loss = trainer.compute_loss(model, dict(packed))
        apart_loss = trainer.compute_loss(model, apart)
        width = packed["input_ids"].shape[1]
        leaky = dict(packed, position_ids=torch.arange(width).repeat(2, 1))  # no boundaries
        leaky_loss = trainer.compute_loss(model, leaky)
    assert packed_loss.item() == pytest.approx(apart_loss.item(), rel=1e-4)
    assert leaky_loss.item() != pytest.approx(apart_loss.item(), rel=1e-4)
    assert trainer.tokens_seen == 3 * int(packed["real_tokens"])


@pytest.mark.parametrize("kind,extra", [
    ("granite", {"logits_scaling": 8.0}),  # logits divided after the head
    ("gemma2", {"head_dim": 16, "final_logit_softcapping": 0.5}),  # tanh-capped after the head
    ("llama", {}),
])
def test_fast_loss_matches_models_that_reshape_their_logits(kind, extra):
    """The head-only-at-trained-positions path must give each model's own loss, also where the
    model does more than `lm_head(hidden)` to make its logits."""
    import contextlib
    from types import SimpleNamespace

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.training.trainers import FastSFTTrainer

    config = AutoConfig.for_model(kind, vocab_size=300, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=256,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # logits far from zero, where scaling or capping them shows
        model.get_output_embeddings().weight.mul_(40)
    model.train()
    ids = torch.randint(5, 300, (3, 48))
    ids[:, :24] = ids[0, :24]  # a shared prompt prefix
    labels = ids.clone()
    labels[:, :30] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    stub = SimpleNamespace(
        accelerator=SimpleNamespace(unwrap_model=lambda m: m, num_processes=1,
                                    autocast=contextlib.nullcontext),
        args=SimpleNamespace(average_tokens_across_devices=False), tokens_seen=0,
        compute_metrics=None)
    stub._head_and_decoder = FastSFTTrainer._head_and_decoder.__get__(stub)
    with torch.no_grad():
        fast = FastSFTTrainer.compute_loss(stub, model, dict(batch))
        reference = model(**batch).loss
    assert fast.item() == pytest.approx(reference.item(), rel=1e-4)

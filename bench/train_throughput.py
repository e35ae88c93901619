"""SFT throughput: tunedeck's fast path vs a plain `transformers.Trainer` + PEFT baseline.

Same model, data, LoRA config, batch size and number of steps, side by side in one run; each
variant trains in its own subprocess so peak memory is its own. Prints non-padding tokens/s,
padding, peak memory (RSS), an MFU estimate against the measured matmul peak of the dtype each
variant computes in (fp32, or bf16 for the `-bf16` ones), the ratio, and QLoRA vs LoRA weight
memory. `--no-shared-prefix` gives each row its own first words, so nothing is shared.

    .venv/bin/python bench/train_throughput.py [--rows 200] [--steps 6] [--batch 8] [--max-len 256]
                                               [--bf16] [--no-shared-prefix]

The baseline: `Trainer` with its default random sampler, right padding to the longest row of each
batch and the full LM head (logits at every position). Ours: `FastSFTTrainer` — length-sorted
batches, the LM head only at trained (completion) positions, and the prompt prefix the rows of a
batch share run once. Both use fp32 on CPU; `--bf16` adds both again in bf16 mixed precision
(what the runner picks on a CPU with native bf16 matmuls), so that gain is shown apart. The
first step of each run is warm-up and is not timed. MFU counts the FLOPs each path actually
executes (padding included, shared prefixes once, attention scores left out) against the matmul
peak of the variant's dtype, so it measures how busy the cores are, not how much work was saved.

`--config PATH` instead measures both sides on a training config's own model, data, batch and
trainer arguments, on the device the runner would use (a GPU where there is one), with peak
accelerator memory: the comparison `tunedeck gpu-check` makes. The meter, the collator and the
timer all variants use live in `engine/gpu_check/throughput.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_SHARED_PREFIX = "TUNEDECK_BENCH_NO_SHARED_PREFIX"  # set by --no-shared-prefix, read by children
sys.path.insert(0, str(ROOT))


def _dataset(tokenizer, rows: int, max_len: int):
    from engine.training import data as tdata

    convs = tdata.conversations(ROOT / "sample_data" / "text_to_sql", {}, "train", rows)
    if os.environ.get(NO_SHARED_PREFIX):
        # Rows that share no instruction: each first message starts with its own number, so
        # rows part after `<|im_start|>system` and the shared-prefix pass has nothing to spare.
        convs = [dataclasses.replace(c, prompt=[{**c.prompt[0], "content": f"[{i}] "
                                                 + c.prompt[0]["content"]}, *c.prompt[1:]])
                 for i, c in enumerate(convs)]
    dataset, _ = tdata.build_dataset(tokenizer, convs, max_len)
    return dataset


def _lora():
    """The LoRA every variant trains: r=16, all linear layers (the issue's setting)."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def run_variant(variant: str, rows: int, steps: int, batch: int, max_len: int) -> dict:
    """One training run in this process; returns its measurements."""
    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from engine import models
    from engine.gpu_check.throughput import Meter, pad_collator, timer_callback
    from engine.training.trainers import FastSFTTrainer, prepare_cpu_training

    torch.manual_seed(0)
    quant = "4bit" if variant == "ours-qlora" else None
    bf16 = variant.endswith("-bf16")
    loaded = models.load(None, quantize=quant)
    model, tok = loaded.model, loaded.tokenizer
    model.train()
    dataset = _dataset(tok, rows, max_len)
    lora = _lora()
    collate = pad_collator(tok.pad_token_id)
    if variant == "ours-packed":
        from engine.training.batching import PackedCollator
        from engine.training.data import pack

        dataset, collate = pack(dataset, max_len), PackedCollator(tok.pad_token_id)
    meter = Meter(collate, fast=not variant.startswith("baseline"))
    timer = timer_callback(meter)
    common = dict(output_dir="/tmp/tunedeck-bench", per_device_train_batch_size=batch,
                  max_steps=steps, learning_rate=2e-4, logging_steps=1000, save_strategy="no",
                  report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                  dataloader_num_workers=0, remove_unused_columns=False, optim="adamw_torch",
                  bf16=bf16)
    if variant.startswith("baseline"):
        model = get_peft_model(model, lora)
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset,
                          data_collator=meter, callbacks=[timer])
    else:
        from trl import SFTConfig

        args = SFTConfig(**common, gradient_checkpointing=False, max_length=max_len,
                         shuffle_dataset=False)
        trainer = FastSFTTrainer(model=model, args=args, train_dataset=dataset,
                                 processing_class=tok, peft_config=lora, data_collator=meter,
                                 callbacks=[timer])
        prepare_cpu_training(trainer.model)
    trainer.train()
    elapsed = (timer.t1 - timer.t0) if timer.t0 else float("nan")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    head = loaded.model.get_output_embeddings().weight.shape.numel()
    body = models.count_parameters(loaded.model) - head  # tied embeddings: the head's matrix
    # Frozen base: forward 2N + backward through activations 2N + weight grads 2·trainable.
    flops = (meter.body_positions * (4 * body + 2 * trainable)
             + meter.head_positions * 4 * head)
    return {"variant": variant, "tokens_per_s": meter.timed_tokens / elapsed,
            "padding": 1 - meter.tokens / meter.padded, "timed_steps": steps - 1,
            "flops_per_s": flops / elapsed,
            "body_share": meter.body_positions / max(1, meter.timed_tokens)}


def interleaved(rows: int, batch: int, max_len: int, rounds: int) -> dict:
    """Forward+backward of the two paths alternated batch by batch in one process, on one LoRA
    model: on a shared, busy machine the load drifts, and alternating cancels most of it.
    Baseline: random batches, full logits, the model's own loss. Ours: length-sorted batches,
    LM head only at trained positions, shared prefix run once (FastSFTTrainer.compute_loss)."""
    import random

    import torch
    from peft import get_peft_model

    from engine import models
    from engine.gpu_check.throughput import pad_collator
    from engine.training.batching import LengthSortedBatchSampler
    from engine.training.trainers import FastSFTTrainer

    torch.manual_seed(0)
    loaded = models.load(None)
    tok = loaded.tokenizer
    model = get_peft_model(loaded.model, _lora())
    model.train()
    dataset = _dataset(tok, rows, max_len)
    collate = pad_collator(tok.pad_token_id)
    order = list(range(len(dataset)))
    random.Random(0).shuffle(order)
    random_batches = [collate([dataset[i] for i in order[k:k + batch]])
                      for k in range(0, batch * rounds, batch)]
    lengths = [len(x) for x in dataset["input_ids"]]
    blocks = LengthSortedBatchSampler(lengths, batch, seed=0).blocks()[:rounds]
    sorted_batches = [collate([dataset[i] for i in b]) for b in blocks]
    fast_loss = FastSFTTrainer.compute_loss.__get__(_LossOnly(model))
    totals = {"baseline": [0.0, 0], "ours": [0.0, 0]}
    for step in range(rounds + 1):  # step 0 warms both paths up
        for name, b in (("baseline", random_batches[step % rounds]),
                        ("ours", sorted_batches[step % rounds])):
            t = time.perf_counter()
            loss = model(**b).loss if name == "baseline" else fast_loss(model, dict(b))
            loss.backward()
            model.zero_grad(set_to_none=True)
            if step:
                totals[name][0] += time.perf_counter() - t
                totals[name][1] += int(b["attention_mask"].sum())
    return {k: n / s for k, (s, n) in totals.items()}


def eval_loss(rows: int, batch: int, max_len: int) -> dict:
    """`evaluate()` on the validation split: the baseline `Trainer` (sequential batches, full
    logits) against `FastSFTTrainer` (length order, shared prefix, head at trained positions), on
    the same LoRA model in one process. Returns seconds and eval loss of each."""
    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments
    from trl import SFTConfig

    from engine import models
    from engine.gpu_check.throughput import pad_collator
    from engine.training import data as tdata
    from engine.training.trainers import FastSFTTrainer

    torch.manual_seed(0)
    loaded = models.load(None)
    tok = loaded.tokenizer
    model = get_peft_model(loaded.model, _lora())
    convs = tdata.conversations(ROOT / "sample_data" / "text_to_sql", {}, "validation", rows)
    dataset, _ = tdata.build_dataset(tok, convs, max_len)
    common = dict(output_dir="/tmp/tunedeck-bench", per_device_eval_batch_size=batch,
                  report_to="none", use_cpu=True, disable_tqdm=True, remove_unused_columns=False,
                  bf16=False)  # SFTConfig would default to bf16 where the CPU has it
    collate = pad_collator(tok.pad_token_id)
    trainers = {
        "baseline": Trainer(model=model, args=TrainingArguments(**common), eval_dataset=dataset,
                            data_collator=collate),
        "ours": FastSFTTrainer(model=model, args=SFTConfig(**common, max_length=max_len),
                               train_dataset=dataset, eval_dataset=dataset,
                               processing_class=tok, data_collator=collate),
    }
    out = {}
    for round_ in range(2):  # the first round warms both up
        for name, trainer in trainers.items():
            start = time.perf_counter()
            metrics = trainer.evaluate()
            if round_:
                out[name] = (time.perf_counter() - start, metrics["eval_loss"])
    out["rows"] = len(dataset)
    return out


class _LossOnly:
    """The attributes FastSFTTrainer.compute_loss reads, without building a trainer."""

    def __init__(self, model):
        from types import SimpleNamespace

        self.accelerator = SimpleNamespace(unwrap_model=lambda m: m, num_processes=1,
                                           autocast=contextlib.nullcontext)
        self.args = SimpleNamespace(average_tokens_across_devices=False)
        self.tokens_seen = 0
        from engine.training.trainers import FastSFTTrainer

        self._head_and_decoder = FastSFTTrainer._head_and_decoder.__get__(self)


def weight_bytes(quantize: str | None) -> int:
    """Bytes held by the model's parameters and buffers (4-bit: packed weights + scales)."""
    from engine import models

    model = models.load(None, quantize=quantize).model
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            total += qs.absmax.numel() * qs.absmax.element_size()
            if getattr(qs, "state2", None) is not None:
                total += qs.state2.absmax.numel() * qs.state2.absmax.element_size()
    return total


def matmul_peak(n: int = 1024, repeat: int = 10, dtype: str = "float32") -> float:
    """Measured matmul FLOP/s on this machine in `dtype` (the MFU denominator of the variants
    that compute in it: a bf16 step is held to the bf16 peak, not the fp32 one)."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def config_comparison(path: str, steps: int) -> None:
    """Both sides on a training config, one after the other in this process (peak memory is
    torch.cuda.max_memory_allocated, reset between them)."""
    from engine.gpu_check.throughput import compare, measure
    from engine.training.config import TrainConfig
    from engine.training.method_fit import fit_method

    config, _ = fit_method(TrainConfig.from_yaml(path))
    ours = measure("ours", config, steps)
    result = compare(measure("baseline", config, steps, ours.gradient_checkpointing), ours)
    print(f"{path}: {config.method} of {config.model}, batch {config.batch_size}, "
          f"{steps} steps ({steps - 1} timed)")
    for kind in ("baseline", "ours"):
        r = result[kind]
        mem = f"{r['peak_mem_mb']:.0f} MB" if r["peak_mem_mb"] else "–"
        print(f"{kind:<10}{r['tokens_per_s']:>10.1f} tokens/s{r['padding']:>8.0%} padding  "
              f"peak {mem}, gradient checkpointing {'on' if r['gradient_checkpointing'] else 'off'}")
    print(f"ours / baseline: {result['speedup']:.2f}x"
          + (f"; memory {result['memory_ratio']:.2f}x" if result["memory_ratio"] else ""))


def _child(variant: str, args: argparse.Namespace) -> dict:
    """Run a variant in a subprocess; its peak RSS is measured by the OS (wait4)."""
    cmd = [sys.executable, __file__, "--variant", variant, "--rows", str(args.rows),
           "--steps", str(args.steps), "--batch", str(args.batch), "--max-len", str(args.max_len)]
    out_path = Path(f"/tmp/tunedeck-bench-{variant}-{os.getpid()}.json")
    proc = subprocess.Popen([*cmd, "--out", str(out_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0 or not out_path.exists():
        raise SystemExit(f"{variant} failed (status {status}); rerun it alone: {' '.join(cmd)}")
    result = json.loads(out_path.read_text())
    out_path.unlink()
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--variant", choices=("baseline", "ours", "ours-qlora", "baseline-bf16",
                                              "ours-bf16", "ours-packed"))
    parser.add_argument("--out")
    parser.add_argument("--skip-qlora", action="store_true")
    parser.add_argument("--bf16", action="store_true",
                        help="also run both paths in bf16 mixed precision")
    parser.add_argument("--no-shared-prefix", action="store_true",
                        help="rows that share no instruction (each starts with its own number)")
    parser.add_argument("--packing", action="store_true",
                        help="also run ours with packing=true (rows packed to --max-len)")
    parser.add_argument("--interleaved", type=int, metavar="ROUNDS", default=0,
                        help="only alternate the two loss paths batch by batch for ROUNDS rounds "
                        "(robust on a busy machine)")
    parser.add_argument("--eval-loss", action="store_true",
                        help="only time evaluate() on the validation split, both paths")
    parser.add_argument("--config", metavar="PATH",
                        help="only compare both sides on this training config (its model, data, "
                        "batch, precision, optimizer) for --steps steps, as gpu-check does")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.config:
        return config_comparison(args.config, args.steps)
    if args.eval_loss:
        r = eval_loss(args.rows, args.batch, args.max_len)
        (b_s, b_loss), (o_s, o_loss) = r["baseline"], r["ours"]
        print(f"evaluate() on {r['rows']} validation rows, batch {args.batch}: baseline "
              f"{b_s:.1f} s (eval loss {b_loss:.4f}), ours {o_s:.1f} s (eval loss {o_loss:.4f}), "
              f"ratio {b_s / o_s:.2f}x")
        return
    if args.interleaved:
        rates = interleaved(args.rows, args.batch, args.max_len, args.interleaved)
        print(f"interleaved fwd+bwd, {args.interleaved} rounds: baseline "
              f"{rates['baseline']:.1f} tokens/s, ours {rates['ours']:.1f} tokens/s, "
              f"ratio {rates['ours'] / rates['baseline']:.2f}x")
        return
    if args.variant:
        result = run_variant(args.variant, args.rows, args.steps, args.batch, args.max_len)
        Path(args.out).write_text(json.dumps(result))
        return

    if args.no_shared_prefix:
        os.environ[NO_SHARED_PREFIX] = "1"
    peaks = {"fp32": matmul_peak(), "bf16": matmul_peak(dtype="bfloat16") if args.bf16 else 0.0}
    variants = ["baseline", "ours"] + ([] if args.skip_qlora else ["ours-qlora"])
    variants += ["baseline-bf16", "ours-bf16"] if args.bf16 else []
    variants += ["ours-packed"] if args.packing else []
    results = {v: _child(v, args) for v in variants}
    print(f"SmolLM2-135M, LoRA r=16 all-linear, batch {args.batch}, max length {args.max_len}, "
          f"{args.rows} text-to-SQL rows, {args.steps} steps ({args.steps - 1} timed), "
          f"{os.cpu_count()} CPUs; matmul peak fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s"
          + (f", bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s" if args.bf16 else "")
          + ("; rows share no prefix" if args.no_shared_prefix else ""))
    print(f"{'variant':<14}{'tokens/s':>10}{'padding':>9}{'body runs':>11}{'peak RSS':>11}"
          f"{'MFU':>7}")
    for name, r in results.items():
        # "body runs": decoder positions executed per real token (padding adds, sharing saves).
        print(f"{name:<14}{r['tokens_per_s']:>10.1f}{r['padding']:>8.0%}{r['body_share']:>11.2f}"
              f"{r['peak_rss_mb']:>8.0f} MB"
              f"{r['flops_per_s'] / peaks['bf16' if name.endswith('-bf16') else 'fp32']:>7.1%}")
    ratio = results["ours"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    print(f"ours / baseline: {ratio:.2f}x (target >= 2x)")
    if args.bf16:
        bf16 = results["ours-bf16"]["tokens_per_s"]
        print(f"bf16 mixed: ours-bf16 / baseline-bf16 "
              f"{bf16 / results['baseline-bf16']['tokens_per_s']:.2f}x; ours-bf16 / ours "
              f"{bf16 / results['ours']['tokens_per_s']:.2f}x; ours-bf16 / baseline "
              f"{bf16 / results['baseline']['tokens_per_s']:.2f}x")
    lora_w, qlora_w = weight_bytes(None), weight_bytes("4bit")
    print(f"weights: LoRA (fp32) {lora_w / 2**20:.0f} MB, QLoRA (nf4) {qlora_w / 2**20:.0f} MB, "
          f"ratio {qlora_w / lora_w:.2f} (target <= 0.35)")


if __name__ == "__main__":
    main()

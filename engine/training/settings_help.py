"""What each training setting means, in a line: the Train form shows the focused field's, and
`engine.training.recipes.field_help` puts a recipe's own meaning (`Recipe.settings`) before these.

A test holds every `TrainConfig` field to a line here or in every recipe that uses it.
"""

from __future__ import annotations

COMMON: dict[str, str] = {
    "model": "the base model: a catalogue name (tunedeck models), a Hugging Face id or a folder",
    "dataset": "a .jsonl/.csv/.parquet file, or a folder with train / validation / test splits",
    "eval_dataset": "evaluation rows (default: the dataset folder's validation split)",
    "mapping": "your columns to tunedeck's fields, e.g. {question: prompt, query: completion}",
    "method": "how to train: auto, full, lora, qlora, dora (supervised), dpo, kto "
              "(preference), grpo (rewards)",
    "lora_r": "LoRA rank: adapter capacity; 8–64 is usual, more learns more and costs memory",
    "lora_alpha": "LoRA scale (alpha / r multiplies the update); often 2 × lora_r",
    "lora_dropout": "dropout inside the adapter, against overfitting small data (0–0.1)",
    "target_modules": "layers that get an adapter: all-linear, or a list of module names",
    "quant_type": "QLoRA's 4-bit format: nf4 (normal-float, the QLoRA paper's) or fp4",
    "double_quant": "QLoRA: quantize the quantization constants too (~0.4 bits/weight saved)",
    "optimizer": "auto: paged 8-bit AdamW on CUDA, AdamW elsewhere; or a name",
    "learning_rate": "step size; empty: the method's default (docs/training.md's table)",
    "scheduler": "how the learning rate changes over the run (cosine, linear, constant, …)",
    "warmup_ratio": "share of the steps the learning rate ramps up from 0",
    "epochs": "passes over the training rows (used when max steps is -1)",
    "max_steps": "stop after this many optimizer steps; -1: train for `epochs`",
    "batch_size": "rows per device per step (the global batch: × processes × grad_accum)",
    "grad_accum": "batches summed before each optimizer step: a larger batch in the same memory",
    "max_seq_len": "tokens per row at most; longer rows are cut (pre-flight counts them)",
    "packing": "join short rows into full max_seq_len rows: fewer padded tokens",
    "completion_only_loss": "train on the answer's tokens only, not the prompt's",
    "eval_every": "evaluate every N steps (0: never); each reads the eval rows",
    "sample_every": "write sample completions every N steps (0: never) for the live view",
    "sample_k": "how many samples each time",
    "save_every": "checkpoint every N steps (0: only at a stop): what resume starts from",
    "seed": "random seed of the data order, the adapter's init and the sampling",
    "precision": "auto: bf16 where this device runs it fast, else fp32; or fp32 / bf16 / fp16",
    "name": "a word in the run's id, and what newest:NAME finds",
    "limit": "train on the first N rows only (empty: all)",
    "template": "a prompt-lab template the prompts are rendered with, as evaluation sends them",
    "eval_limit": "evaluate on the first N rows only (empty: all)",
    "adapter": "start from this adapter: a run id, RUN_ID:checkpoint-N, newest:NAME or a folder",
    "beta": "how far the policy may move from its reference (empty: the method's default)",
    "tensorboard": "write TensorBoard event files beside events.jsonl",
    "rewards": "GRPO's rewards and weights (a reward method's setting)",
    "num_generations": "GRPO: completions sampled per prompt (a reward method's setting)",
    "max_completion_length": "GRPO: tokens per sampled completion at most",
    "temperature": "GRPO: the sampling temperature",
    "database": "GRPO: the SQLite database the SQL rewards query (empty: the sample one)",
}

SFT: dict[str, str] = {
    "dataset": "prompt / completion (or instruction / input / output, or messages) rows",
    "beta": "not used by supervised training",
    "adapter": "not used by supervised training (it trains a new adapter from the base)",
}

PREFERENCE: dict[str, str] = {
    "dataset": "DPO: prompt / chosen / rejected rows; KTO: prompt / completion / label "
               "(tunedeck ratings export writes them)",
    "beta": "how far the policy may move from the reference model; DPO / KTO's usual 0.1, lower "
            "trusts the preferences more",
    "adapter": "the SFT adapter to start from; its frozen copy is the reference (empty: the base)",
    "batch_size": "rated rows per device per step; KTO needs at least 2 (its KL estimate)",
    "max_seq_len": "tokens of prompt + answer at most",
}

RL: dict[str, str] = {
    "dataset": "the prompts and their references (SQL query, answer or label) the rewards "
               "compare with: the SFT data",
    "beta": "the KL weight that holds the policy near its start (0: none; 0.04 by default)",
    "adapter": "the SFT adapter to start from; its frozen copy is the KL reference "
               "(empty: the base). newest:sql is the SFT recipe's newest run",
    "batch_size": "completions per device per step: num_generations × the prompts a step sees",
    "rewards": "reward: weight, e.g. {sql_exec: 1.0, format: 0.2}; built-ins sql_exec, "
               "sql_valid, answer, label, format, or path/file.py:function (runs your code)",
    "num_generations": "completions sampled per prompt and compared with each other (≥ 2; "
                       "empty: 4 on a CPU, 8 on a GPU)",
    "max_completion_length": "tokens per sampled completion at most (empty: the longest "
                             "reference + 16)",
    "temperature": "sampling temperature of the completions (empty: 1.0); too low and a "
                   "prompt's completions agree and teach nothing",
    "database": "the SQLite database the SQL rewards run queries on, read-only (empty: the "
                "sample one)",
    "sample_every": "every N steps, write some of the step's sampled completions with their "
                    "rewards (the live view; the Rate screen imports them)",
    "max_seq_len": "not used: GRPO bounds completions by max_completion_length",
    "eval_every": "not used by GRPO yet: evaluate before and after with tunedeck eval",
}

"""Settings that fit the chosen model and dataset: what the Train form starts from.

The generic defaults of `TrainConfig` know nothing of the data. Here the training rows are
tokenized as the runner will tokenize them (a sample of them for large sets), and the length
limit, the number of epochs and the eval / sample / save cadence follow from what is found. Each
change carries its reason, which the Train screen shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.training.config import TrainConfig

SAMPLE_ROWS = 2000  # rows tokenized to learn the lengths; enough for a stable 99th percentile
LENGTH_STEP = 64  # max_seq_len is rounded up to a multiple of this
LORA_LR, FULL_LR = 2e-4, 2e-5


@dataclass
class Suggestion:
    config: TrainConfig
    reasons: list[str] = field(default_factory=list)
    rows: int = 0
    steps: int = 0


def epochs_for(rows: int) -> float:
    """Small sets need several passes to move a model; large ones rarely more than one."""
    if rows <= 1000:
        return 3.0
    if rows <= 10000:
        return 2.0
    return 1.0


def length_limit(lengths: list[int], context: int) -> tuple[int, int]:
    """(max_seq_len, 99th-percentile length): the percentile rounded up, within the context."""
    ordered = sorted(lengths)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return min(context, max(LENGTH_STEP, math.ceil(p99 / LENGTH_STEP) * LENGTH_STEP)), p99


def cadence(steps: int, has_eval: bool) -> tuple[int, int, int]:
    """(eval_every, sample_every, save_every): ~10 eval points, ~5 sample points, ~4 saves."""
    return (max(1, steps // 10) if has_eval else 0, max(1, steps // 5), max(1, steps // 4))


def suggest(config: TrainConfig, progress: Callable[[str], None] | None = None) -> Suggestion:
    """`config` with the data-dependent settings filled in. Raises TunedeckError (naming the
    file or setting) when the model or the data cannot be read."""
    from engine import models
    from engine.training import data as tdata
    from engine.training.runner import load_conversations

    say = progress or (lambda _msg: None)
    from engine.training.shipped import recipe_for

    found = recipe_for(config)
    if found is not None:
        return _from_recipe(*found, say)
    say("Loading the tokenizer…")
    tokenizer = models.load_tokenizer(config.model)
    from transformers import AutoConfig

    context = models.context_window(AutoConfig.from_pretrained(str(models.local_folder(
        config.model))))
    say("Reading the data…")
    train, evals = load_conversations(config)
    say("Measuring lengths…")
    step = max(1, len(train) // SAMPLE_ROWS)
    lengths = [len(tdata.tokenize(tokenizer, conv, 10**9)["input_ids"])
               for conv in train[::step][:SAMPLE_ROWS]]
    reasons = []
    max_seq_len, p99 = length_limit(lengths, context)
    sampled = "" if step == 1 else f" (a sample of {len(lengths)})"
    reasons.append(f"max_seq_len {max_seq_len}: 99% of the {len(train)} training rows{sampled} "
                   f"are at most {p99} tokens, the longest {max(lengths)}"
                   + (f"; the model's context is {context}" if max_seq_len == context else ""))
    epochs = epochs_for(len(train))
    reasons.append(f"epochs {epochs:g} for {len(train)} rows")
    batch_size = max(1, min(config.batch_size, len(train)))
    per_step = batch_size * config.grad_accum
    steps = max(1, math.ceil(len(train) / per_step * epochs))
    eval_every, sample_every, save_every = cadence(steps, bool(evals))
    reasons.append(f"{steps} steps: eval every {eval_every or '— (no validation split)'}, "
                   f"samples every {sample_every}, a checkpoint every {save_every}")
    learning_rate = FULL_LR if config.method == "full" else LORA_LR
    if learning_rate != config.learning_rate:
        reasons.append(f"learning rate {learning_rate:g} for {config.method}")
    method = config.method
    if method == "qlora":
        ok, why = models.probe_4bit()
        if not ok:
            method = "lora"
            reasons.append(f"method lora: 4-bit is not available here ({why})")
    suggested = replace(config, max_seq_len=max_seq_len, epochs=epochs, max_steps=-1,
                        batch_size=batch_size, eval_every=eval_every, sample_every=sample_every,
                        save_every=save_every, learning_rate=learning_rate, method=method)
    return Suggestion(suggested, reasons, rows=len(train), steps=steps)


def _from_recipe(recipe: TrainConfig, path: Path, say: Callable[[str], None]) -> Suggestion:
    """The shipped recipe for this dataset, its length limit checked against the data (no row's
    EOS may be cut) and its step count worked out."""
    from engine import models
    from engine.training import data as tdata
    from engine.training.runner import load_conversations

    say("Loading the tokenizer…")
    tokenizer = models.load_tokenizer(recipe.model)
    say("Reading the data…")
    train, _evals = load_conversations(recipe)
    longest = max(len(tdata.tokenize(tokenizer, conv, 10**9)["input_ids"]) for conv in train)
    reasons = [f"the shipped recipe {path.name} for this dataset "
               "(its settings are measured in docs/evaluation.md)"]
    max_seq_len = recipe.max_seq_len
    if longest > max_seq_len:
        max_seq_len = math.ceil(longest / LENGTH_STEP) * LENGTH_STEP
        reasons.append(f"max_seq_len {max_seq_len}: the longest of the {len(train)} rows is "
                       f"{longest} tokens")
    else:
        reasons.append(f"max_seq_len {max_seq_len}: every one of the {len(train)} rows fits "
                       f"(the longest is {longest} tokens), so no EOS is cut")
    rows = len(train) if recipe.limit is None else min(recipe.limit, len(train))
    per_step = recipe.batch_size * recipe.grad_accum
    steps = (recipe.max_steps if recipe.max_steps > 0
             else max(1, math.ceil(rows / per_step * recipe.epochs)))
    return Suggestion(replace(recipe, max_seq_len=max_seq_len), reasons, rows=rows, steps=steps)

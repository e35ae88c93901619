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

from engine.training import method_defaults
from engine.training.config import TrainConfig

SAMPLE_ROWS = 2000  # rows tokenized to learn the lengths; enough for a stable 99th percentile
LENGTH_STEP = 64  # max_seq_len is rounded up to a multiple of this


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
    from engine.training.shared import load_conversations

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
    learning_rate = method_defaults.learning_rate(config.method)
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
    from engine.training.shared import load_conversations

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


# ---------------------------------------------------------------------- evaluation and sampling
# What happens between the steps costs time too, and on a CPU often more than the steps: a
# new user's QLoRA run was estimated at ~9 s and took ~6.5 min, its two evaluations of 72 rows
# 193 s and 128 s (a loaded 2-core CPU). Where no run of the same model, method and dataset has
# measured it, evaluation's tokens/s are the training step's times this factor: a forward pass
# alone, but the 4-bit layers de-quantize every batch either way.
EVAL_PACE = {"qlora": 1.0, "lora": 2.0, "dora": 2.0, "full": 2.0}
# Seconds per generated token, a 135M model on a 2-core CPU, scaled by parameter count.
CPU_GEN_SECONDS_PER_TOKEN = {"qlora": 0.08, "lora": 0.04, "dora": 0.05, "full": 0.03}
SAMPLE_BUDGET = 96  # new tokens at most per sample (RunEventsCallback.max_new_tokens)
MEASURED_RUNS = 30  # newest runs looked at for a measured cost


@dataclass
class BetweenSteps:
    """Evaluations and sample rounds a run will do, and what they will cost."""

    evals: int = 0
    eval_rows: int = 0
    eval_seconds: float | None = None  # all evaluations together
    sample_rounds: int = 0
    samples: int = 0  # per round
    sample_seconds: float | None = None  # all rounds together
    measured_in: str = ""  # the run the per-row costs were measured in, if any

    @property
    def seconds(self) -> float:
        return (self.eval_seconds or 0.0) + (self.sample_seconds or 0.0)

    def describe(self, duration: Callable[[float], str]) -> str:
        """`2 evaluations of 72 rows ~4m10s (measured in <run>) · 2 rounds of 2 samples ~20s`."""
        parts = []
        if self.evals:
            cost = f" ~{duration(self.eval_seconds)}" if self.eval_seconds is not None else ""
            where = f" (measured in {self.measured_in})" if self.measured_in else ""
            parts.append(f"{self.evals} evaluation{'s' * (self.evals != 1)} of "
                         f"{self.eval_rows:,} rows{cost}{where}")
        if self.sample_rounds:
            cost = f" ~{duration(self.sample_seconds)}" if self.sample_seconds is not None else ""
            parts.append(f"{self.sample_rounds} round{'s' * (self.sample_rounds != 1)} of "
                         f"{self.samples} sample{'s' * (self.samples != 1)}{cost}")
        return " · ".join(parts)


def between_steps(config: TrainConfig, steps: int, eval_rows: int, row_tokens: float,
                  train_tokens_per_s: float | None, completion_tokens: float,
                  total_params: int) -> BetweenSteps:
    """The evaluations and samples of a run of `steps` steps, costed from an earlier run of the
    same model, method and dataset where there is one, else from the training pace."""
    out = BetweenSteps()
    if config.eval_every and eval_rows:
        out.evals, out.eval_rows = steps // config.eval_every, eval_rows
    if config.sample_every and eval_rows:  # samples are the first sample_k evaluation prompts
        out.sample_rounds = steps // config.sample_every
        out.samples = min(config.sample_k, eval_rows)
    if not (out.evals or out.sample_rounds):
        return out
    per_row, per_sample, out.measured_in = measured_costs(config)
    if per_row is None and train_tokens_per_s:
        per_row = row_tokens / (train_tokens_per_s * EVAL_PACE.get(config.method, 1.0))
    if per_sample is None and total_params and train_tokens_per_s:  # a CPU estimate
        tokens = min(SAMPLE_BUDGET, completion_tokens + 16)
        per_sample = tokens * CPU_GEN_SECONDS_PER_TOKEN.get(config.method, 0.05) * (
            total_params / 135e6)
    if out.evals and per_row is not None:
        out.eval_seconds = out.evals * out.eval_rows * per_row
    if out.sample_rounds and per_sample is not None:
        out.sample_seconds = out.sample_rounds * out.samples * per_sample
    if out.measured_in and per_row is None:
        out.measured_in = ""
    return out


def measured_costs(config: TrainConfig) -> tuple[float | None, float | None, str]:
    """(seconds per evaluation row, seconds per sample, run id) from the newest run of the same
    model, method and dataset that measured them (its status: eval_seconds / eval_rows,
    sample_seconds per sample_k)."""
    from engine.adapters import read_run_config
    from engine.training.rundir import list_runs

    try:
        runs = list_runs()[:MEASURED_RUNS]
    except OSError:
        return None, None, ""
    for run in runs:
        status = run.read_status()
        if not status.get("eval_seconds") or not status.get("eval_rows"):
            continue
        if (status.get("model"), status.get("method")) != (config.model, config.method):
            continue
        their = read_run_config(run)
        if str(their.get("dataset")) != str(config.dataset_path()):
            continue
        per_row = float(status["eval_seconds"]) / float(status["eval_rows"])
        per_sample = None
        if status.get("sample_seconds") and their.get("sample_k"):
            per_sample = float(status["sample_seconds"]) / float(their["sample_k"])
        return per_row, per_sample, run.id
    return None, None, ""

"""Pre-flight: what a run will train on and roughly what it will cost, before it starts.

Tokenizes the training rows exactly as the runner does (engine.training.data), shows one
example's tokens with their trained / masked labels, and fails loudly on the classic silent
failures: every label masked, completions without EOS, pad == eos masking the real EOS, a doubled
BOS. Parameters come from the model built on the meta device (no weights are read), so the
numbers are right for any size of model.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import TunedeckError, first_line
from engine.formatting import duration
from engine.training.config import TrainConfig
from engine.training.data import IGNORE

# Decoder positions/s of the fast SFT path for a 135M model on this kind of 2-core CPU, with
# nothing shared between rows (DESIGN.md, bench/train_throughput.py); scaled by parameter count
# for other models, and by the positions the batches really run (padding adds, a shared prompt
# prefix saves).
CPU_TOKENS_PER_S = {"lora": 140.0, "dora": 100.0, "qlora": 120.0, "full": 90.0}
CPU_REFERENCE_PARAMS = 135e6
# The training step in bf16 mixed precision on a CPU with native bf16 matmuls, vs fp32: 805 vs
# 476 tokens/s (LoRA), 662 vs 408 (QLoRA) measured on an AVX512-BF16 EPYC.
CPU_BF16_STEP_GAIN = 1.6


@dataclass
class PreflightReport:
    ok: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    example_tokens: list[tuple[str, bool]] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    memory_estimate_mb: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    est_seconds: float | None = None
    train_rows: int = 0
    eval_rows: int = 0
    device: str = ""
    mean_tokens: float = 0.0
    padding_ratio: float = 0.0  # padding positions per real token, in length-sorted batches
    shared_ratio: float = 0.0  # real tokens that a shared prompt prefix runs once per batch
    precision: str = ""  # fp32 | bf16 | fp16 (runner.mixed_precision)
    precision_reason: str = ""
    train_seconds: float | None = None  # the steps alone; est_seconds adds `between`
    between: Any = None  # suggest.BetweenSteps: evaluations and samples, and their cost
    train_seconds: float | None = None  # the steps alone; est_seconds adds `between`
    between: Any = None  # suggest.BetweenSteps: evaluations and samples, and their cost
    method: str = ""  # the method that will train (`auto` resolved)
    method_reason: str = ""  # why, when `auto` chose it

    def text(self, max_tokens: int = 400) -> str:
        """Plain text (CLI --dry-run). Trained tokens are wrapped in [[ ]]."""
        lines = [f"Pre-flight: {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"Rows: {self.train_rows} train, {self.eval_rows} eval; "
                     f"{self.mean_tokens:.0f} tokens per row on average; device {self.device}")
        if self.method_reason:
            lines.append(f"Method: {self.method} ({self.method_reason})")
        if self.precision:
            lines.append(f"Precision: {describe_precision(self.precision)} "
                         f"({self.precision_reason})")
        if self.shared_ratio:
            lines.append(f"Batches: {100 * self.padding_ratio:.0f}% padding; a shared prompt "
                         f"prefix spares {100 * self.shared_ratio:.0f}% of the tokens")
        pct = 100 * self.trainable_params / self.total_params if self.total_params else 0
        lines.append(f"Parameters: {self.trainable_params:,} trainable of {self.total_params:,} "
                     f"({pct:.2f}%)")
        if self.memory_estimate_mb:
            parts = ", ".join(f"{k} {v:,.0f} MB" for k, v in self.memory_estimate_mb.items())
            lines.append(f"Memory (estimate): {parts}")
        eta = f"~{duration(self.est_seconds)}" if self.est_seconds else "unknown on this device"
        lines.append(f"Steps: {self.steps}; time {eta}")
        if self.between is not None and self.between.describe(duration):
            lines.append(f"  between the steps: {self.between.describe(duration)}")
        if self.example_tokens:
            lines.append("Example (trained tokens in [[ ]], the rest is masked):")
            shown = self.example_tokens[:max_tokens]
            text = ""
            for tok, trained in shown:
                text += f"[[{tok}]]" if trained else tok
            if len(self.example_tokens) > max_tokens:
                text += f" … ({len(self.example_tokens) - max_tokens} more tokens)"
            lines += ["  " + line for line in text.splitlines() or [""]]
        return "\n".join(lines)



def preflight(config: TrainConfig, progress: Callable[[str], None] | None = None) -> PreflightReport:
    """Check a config and its data. Never raises for a problem the report can name."""
    if config.method in ("dpo", "kto"):  # preference data has its own shape
        from engine.training.preference import preflight_preference

        return preflight_preference(config, progress)
    report = PreflightReport(ok=False)
    say = progress or (lambda _msg: None)
    try:
        config.validate()
    except TunedeckError as err:
        report.errors.append(str(err))
        return report
    from engine import models
    from engine.training import data as tdata
    from engine.training.method_fit import fit_method
    from engine.training.runner import load_conversations

    config, report.method_reason = fit_method(config)
    report.method = config.method

    try:
        say("Loading the tokenizer…")
        tokenizer = models.load_tokenizer(config.model)
        say("Reading the data…")
        train_convs, eval_convs = load_conversations(config)
    except TunedeckError as err:
        report.errors.append(str(err))
        return report
    report.train_rows, report.eval_rows = len(train_convs), len(eval_convs)
    policy = models.device_policy()
    report.device = policy.device
    from engine.training.runner import mixed_precision

    report.precision, report.precision_reason = mixed_precision(config, policy.device,
                                                                policy.dtype_name)

    say("Tokenizing…")
    rows = [tdata.tokenize(tokenizer, c, config.max_seq_len, config.completion_only_loss)
            for c in train_convs]
    _check_rows(report, tokenizer, rows, config)
    if rows:
        ex = rows[0]
        report.example_tokens = [(tokenizer.decode([i]), label != tdata.IGNORE)
                                 for i, label in zip(ex["input_ids"], ex["labels"], strict=True)]
    trained_rows = [r for r in rows if any(label != tdata.IGNORE for label in r["labels"])]
    lengths = [len(r["input_ids"]) for r in trained_rows]
    report.mean_tokens = sum(lengths) / len(lengths) if lengths else 0.0
    per_step = config.batch_size * config.grad_accum
    # Packing fills rows of max_seq_len tokens (best fit, so about this many rows).
    batch_rows = (math.ceil(sum(lengths) / config.max_seq_len) if config.packing
                  else len(trained_rows))
    if config.max_steps > 0:
        report.steps = config.max_steps
    else:
        report.steps = max(1, math.ceil(batch_rows / per_step * config.epochs))

    say("Checking the model's layers and context…")
    if not check_model_fit(config, report):
        report.ok = False
        return report
    say("Counting parameters…")
    try:
        trainable, total, shape = _parameters(config)
        report.trainable_params, report.total_params = trainable, total
        completion_tokens = _mean_trained(trained_rows)
        row_tokens = sum(lengths) / max(1, batch_rows)  # a packed row holds several examples
        report.memory_estimate_mb = _memory(config, report.device, total, trainable, shape,
                                            row_tokens, completion_tokens)
    except Exception as err:  # a model we cannot build on meta: numbers unknown, not fatal
        report.warnings.append(f"parameters and memory not estimated ({type(err).__name__}: {err})")
    from engine.training.batching import batch_layout

    padding, shared = batch_layout(trained_rows, config.batch_size, config.seed)
    if config.packing:
        if shared > padding + 0.05:
            report.warnings.append(
                f"packing turns off the shared-prefix pass, which would spare {100 * shared:.0f}% "
                f"of the tokens of this data against {100 * padding:.0f}% padding without "
                "packing: packing=false is likely faster here.")
    else:
        report.padding_ratio, report.shared_ratio = padding, shared
    if report.device == "cpu" and report.total_params:
        rate = CPU_TOKENS_PER_S.get(config.method, 100.0) * CPU_REFERENCE_PARAMS / max(
            report.total_params, 1)
        if report.precision == "bf16":
            rate *= CPU_BF16_STEP_GAIN
        positions = 1 + report.padding_ratio - report.shared_ratio
        step_tokens = sum(lengths) / max(1, batch_rows) * per_step * positions
        report.est_seconds = report.steps * step_tokens / rate
    _between_steps(report, config, trained_rows)
    report.ok = not report.errors
    return report


def _between_steps(report: PreflightReport, config: TrainConfig,
                   trained_rows: list[dict[str, list[int]]]) -> None:
    """Add evaluation and sampling to the time (they can take longer than the steps), and say
    which row limits the config applies, since the form may not show them."""
    from engine.training.suggest import between_steps

    train_rate = None
    if report.est_seconds:  # real tokens per second of the training steps
        per_step = config.batch_size * config.grad_accum
        train_rate = report.steps * per_step * report.mean_tokens / report.est_seconds
    report.between = between_steps(config, report.steps, report.eval_rows, report.mean_tokens,
                                   train_rate, _mean_trained(trained_rows), report.total_params)
    if report.est_seconds is not None:
        report.train_seconds = report.est_seconds
        report.est_seconds += report.between.seconds
    if config.limit:
        report.warnings.append(f"limit {config.limit} (set in the config): only the first "
                               f"{config.limit} training rows are used.")
    if config.eval_limit:
        report.warnings.append(f"eval_limit {config.eval_limit} (set in the config): each "
                               f"evaluation reads the first {config.eval_limit} rows.")


def describe_precision(precision: str) -> str:
    return "fp32" if precision == "fp32" else f"{precision} mixed (fp32 weights and optimizer)"


def _mean_trained(rows: list[dict[str, list[int]]]) -> float:
    if not rows:
        return 0.0
    return sum(sum(1 for label in r["labels"] if label != -100) for r in rows) / len(rows)


def _check_rows(report: PreflightReport, tokenizer: Any, rows: list[dict[str, list[int]]],
                config: TrainConfig) -> None:
    if not rows:
        report.errors.append("No training rows.")
        return
    masked = [i for i, r in enumerate(rows) if all(label == IGNORE for label in r["labels"])]
    if len(masked) == len(rows):
        report.errors.append(
            f"Every label is masked in all {len(rows)} rows: nothing would be trained. The "
            f"prompts are longer than max_seq_len={config.max_seq_len}, or the completions are "
            "empty. Raise max_seq_len or check the column mapping.")
        return
    if masked:
        report.warnings.append(
            f"{len(masked)} of {len(rows)} rows have every label masked (prompt longer than "
            f"max_seq_len={config.max_seq_len}) and will be skipped.")
    eos = tokenizer.eos_token_id
    masked_rows = set(masked)
    no_eos = [i for i, r in enumerate(rows) if i not in masked_rows
              and (not r["labels"] or r["labels"][-1] != eos)]
    if eos is None:
        report.errors.append("The tokenizer has no EOS token: a tuned model would never stop.")
    elif len(no_eos) == len(rows) - len(masked):
        report.errors.append(
            f"No completion ends with a trained EOS ({tokenizer.eos_token!r}): the tuned model "
            "would never learn to stop. Check the chat template, or raise max_seq_len if "
            "completions are cut.")
    elif no_eos:
        report.warnings.append(
            f"{len(no_eos)} rows are cut by max_seq_len={config.max_seq_len} before their EOS; "
            "raise max_seq_len to keep their endings.")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == eos:
        # Labels come from the completion mask, not from `input_ids != pad`, so the EOS is kept;
        # the check above proves it on the data itself.
        if no_eos and len(no_eos) == len(rows) - len(masked):
            report.errors.append(f"pad == eos ({tokenizer.eos_token!r}) and the EOS is masked.")
        else:
            report.warnings.append(
                f"pad == eos ({tokenizer.eos_token!r}); labels come from the completion mask, "
                "so the real EOS stays trained (checked on the data).")
    bos = tokenizer.bos_token_id
    doubled = [i for i, r in enumerate(rows)
               if bos is not None and len(r["input_ids"]) > 1
               and r["input_ids"][0] == bos and r["input_ids"][1] == bos]
    if doubled:
        report.errors.append(f"{len(doubled)} rows start with a doubled BOS ({tokenizer.bos_token!r}).")
    if not config.completion_only_loss:
        report.warnings.append("completion_only_loss is off: the prompt tokens are trained too.")


def _meta_model(config: TrainConfig) -> tuple[Any, Any]:
    """(hf config, model) with the model built on the meta device: its layers, no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine import models

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    folder = models.local_folder(config.model)
    hf_config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return hf_config, model


def context_window(hf_config: Any) -> int | None:
    """The longest sequence the model was built for, from its config."""
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_model_fit(config: Any, report: PreflightReport) -> bool:
    """Refuse what the run would fail on, or silently do wrong, with this model: max_seq_len
    beyond its context window, and target_modules that name none of its layers. False when it
    added an error. A model that cannot be built on the meta device is a warning only."""
    try:
        hf_config, model = _meta_model(config)
    except Exception as err:
        report.warnings.append(f"layers and context window not checked ({type(err).__name__}: "
                               f"{first_line(err, 200)})")
        return True
    errors = len(report.errors)
    context = context_window(hf_config)
    if context and config.max_seq_len > context:
        report.errors.append(
            f"max_seq_len: {config.max_seq_len} is beyond the model's context window of "
            f"{context:,} tokens; set max_seq_len to at most {context}.")
    # Both train a fresh LoRA adapter (preference training from an SFT adapter keeps its layers).
    if config.uses_peft or (config.method in ("dpo", "kto") and not config.adapter):
        _check_target_modules(config, model, report)
    return len(report.errors) == errors


# Layer types PEFT's LoRA can wrap (transformers' GPT-2 style Conv1D included).
LORA_LAYER_TYPES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D")


def _check_target_modules(config: Any, model: Any, report: PreflightReport) -> None:
    targets = config.target_modules
    if targets == "all-linear":
        return
    modules = [(name, type(m).__name__) for name, m in model.named_modules() if name]
    layers = sorted({name.rsplit(".", 1)[-1] for name, kind in modules
                     if kind == "Linear" and "lm_head" not in name})
    known = f"this model's linear layers are {', '.join(layers)} (or use 'all-linear')"
    if isinstance(targets, str):  # PEFT reads a string as a regex over full module names
        try:
            pattern = re.compile(targets)
        except re.error as err:
            report.errors.append(f"target_modules: {targets!r} is not a valid regular "
                                 f"expression ({err}); {known}.")
            return
        groups = {targets: [kind for name, kind in modules if pattern.fullmatch(name)]}
    else:  # as PEFT matches a list: the full name, or its last dotted parts
        groups = {t: [kind for name, kind in modules if name == t or name.endswith(f".{t}")]
                  for t in targets}
    missing = [t for t, kinds in groups.items() if not kinds]
    not_layers = [t for t, kinds in groups.items()
                  if kinds and not any(k in LORA_LAYER_TYPES for k in kinds)]
    if missing and len(missing) == len(groups):
        report.errors.append(f"target_modules: {', '.join(map(repr, missing))} match(es) no "
                             f"module of {config.model}, so LoRA would have nothing to train; "
                             f"{known}.")
    elif missing:
        report.warnings.append(f"target_modules: {', '.join(map(repr, missing))} match(es) no "
                               f"module of the model and will train nothing; {known}.")
    if not_layers:
        report.errors.append(f"target_modules: {', '.join(map(repr, not_layers))} name(s) "
                             f"blocks, not layers LoRA can wrap; {known}.")


def _parameters(config: TrainConfig) -> tuple[int, int, dict[str, int]]:
    """(trainable, total, shape) from the model built on the meta device (no weights read)."""
    import torch

    from engine.training.runner import peft_config

    hf_config, model = _meta_model(config)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in name)
    total = sum(p.numel() for p in model.parameters())
    shape = {"linear": linear, "hidden": getattr(hf_config, "hidden_size", 0),
             "layers": getattr(hf_config, "num_hidden_layers", 0),
             "vocab": getattr(hf_config, "vocab_size", 0),
             "heads": getattr(hf_config, "num_attention_heads", 0)}
    lora = peft_config(config)
    if lora is None:
        return total, total, shape
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return trainable, total, shape


def _memory(config: TrainConfig, device: str, total: int, trainable: int, shape: dict[str, int],
            mean_tokens: float, completion_tokens: float) -> dict[str, float]:
    """A rough budget in MB: weights by method, optimizer (+ gradients), activations."""
    on_gpu = device == "cuda"
    dtype_bytes = 2 if on_gpu or device == "mps" else 4
    mb = 2**20
    if config.quantized:
        # nf4: half a byte per linear weight plus block scales; embeddings stay in full dtype.
        per = 0.5 + (0.127 / 8 if config.double_quant else 4 / 64)
        weights = shape["linear"] * per + (total - shape["linear"]) * dtype_bytes
    else:
        weights = total * dtype_bytes
    from engine.training.runner import optimizer_name

    optim = optimizer_name(config, device)
    state_bytes = 2 if "8bit" in optim else 8
    grad_bytes = 4 if config.uses_peft else dtype_bytes
    optimizer = trainable * (state_bytes + grad_bytes)
    b, s = config.batch_size, min(mean_tokens * 1.05, config.max_seq_len)
    h, layers, heads = shape["hidden"] or 1, shape["layers"] or 1, shape["heads"] or 1
    # Korthikanti et al.: ~34·s·b·h + 5·a·s²·b bytes per layer at 16-bit; 2·s·b·h with
    # checkpointing. fp32 doubles it. Logits only at trained positions (the fast path).
    if on_gpu:
        per_layer = 2 * s * b * h * dtype_bytes / 2
    else:
        per_layer = (34 * s * b * h + 5 * heads * s * s * b) * dtype_bytes / 2
    logits = b * max(completion_tokens, 1) * shape["vocab"] * 4 * 3
    activations = per_layer * layers + logits
    out = {"weights": weights / mb, "optimizer": optimizer / mb, "activations": activations / mb}
    out["total"] = sum(out.values())
    return out

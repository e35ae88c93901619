"""The pre-flight report and the checks every recipe's pre-flight makes: the model builds on
the meta device (no weights read), its layers match `target_modules`, the lengths fit its
context, and the parameters and memory it will take."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from engine.errors import first_line
from engine.formatting import duration
from engine.training.config import PREFERENCE_METHODS, TrainConfig


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


def describe_precision(precision: str) -> str:
    return "fp32" if precision == "fp32" else f"{precision} mixed (fp32 weights and optimizer)"


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
    if config.uses_peft or (config.method in PREFERENCE_METHODS and not config.adapter):
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


def parameters_for(config: TrainConfig) -> tuple[int, int, dict[str, int]]:
    """(trainable, total, shape) from the model built on the meta device (no weights read)."""
    import torch

    from engine.training.shared import peft_config

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


def memory_estimate(config: TrainConfig, device: str, total: int, trainable: int,
                    shape: dict[str, int], mean_tokens: float,
                    completion_tokens: float) -> dict[str, float]:
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
    from engine.training.shared import optimizer_name

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

"""The pre-flight report and the checks every recipe's pre-flight makes: the model builds on
the meta device (no weights read), its layers match `target_modules`, the lengths fit its
context, the parameters and memory it will take, whether CUDA needs gradient checkpointing,
and the processes it runs on (`set_world`)."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from engine.errors import first_line
from engine.formatting import duration
from engine.training.config import ADAPTER_METHODS, TrainConfig


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
    optimizer: str = ""  # the optimizer the trainer will use (`auto` resolved)
    checkpointing: bool = False  # gradient checkpointing (`checkpointing_choice`)
    checkpointing_reason: str = ""
    batch_rows: int = 0  # batches are cut from this many rows per epoch (packed rows count once)
    world_size: int = 1  # training processes (`set_world`)
    global_batch: int = 0  # rows per optimizer step: per device x processes x accumulation
    batch_detail: str = ""  # "global batch 8 = 2 per device x 2 processes x 2 accumulation steps"
    launch: str = ""  # how the processes start, e.g. "accelerate, config ddp"
    # Settings the recipe chose where the config left them unset, each with why
    # ("num_generations 4: …"); GRPO's generation settings.
    fitted: list[str] = field(default_factory=list)

    def text(self, max_tokens: int = 400) -> str:
        """Plain text (CLI --dry-run). Trained tokens are wrapped in [[ ]]."""
        lines = [f"Pre-flight: {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"Rows: {self.train_rows} train, {self.eval_rows} eval; "
                     f"{self.mean_tokens:.0f} tokens per row on average; device {self.device}")
        if self.method_reason:
            lines.append(f"Method: {self.method} ({self.method_reason})")
        lines += [f"Fitted: {line}" for line in self.fitted]
        if self.precision:
            lines.append(f"Precision: {describe_precision(self.precision)} "
                         f"({self.precision_reason})")
        if self.optimizer:
            lines.append(f"Optimizer: {self.optimizer}; gradient checkpointing "
                         f"{'on' if self.checkpointing else 'off'} ({self.checkpointing_reason})")
        if self.batch_detail:
            launch = f" ({self.launch})" if self.launch else ""
            lines.append(f"Processes: {self.world_size}{launch}; {self.batch_detail}")
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
    if config.uses_peft or (config.method in ADAPTER_METHODS and not config.adapter):
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
                    shape: dict[str, int], mean_tokens: float, completion_tokens: float,
                    checkpointing: bool = False) -> dict[str, float]:
    """A rough budget in MB per process: weights by method, optimizer (+ gradients),
    activations (with or without gradient checkpointing)."""
    dtype_bytes = 2 if device in ("cuda", "mps") else 4
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
    if checkpointing:
        per_layer = 2 * s * b * h * dtype_bytes / 2
    else:
        per_layer = (34 * s * b * h + 5 * heads * s * s * b) * dtype_bytes / 2
    logits = b * max(completion_tokens, 1) * shape["vocab"] * 4 * 3
    activations = per_layer * layers + logits
    out = {"weights": weights / mb, "optimizer": optimizer / mb, "activations": activations / mb}
    out["total"] = sum(out.values())
    return out


# Gradient checkpointing where the memory could not be estimated (a model that does not build
# on the meta device): on CUDA, as the safe side.
NO_ESTIMATE = "on: the memory could not be estimated, so the safe side"

# The share of a GPU's memory a plan may fill: CUDA's own context, the allocator's fragments and
# this estimate's error take the rest. A plan above it turns gradient checkpointing on.
GPU_MEMORY_USABLE = 0.85


def gpu_memory_mb() -> float | None:
    """The memory of this process's GPU in MB, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**20


def checkpointing_choice(config: TrainConfig, device: str, total: int, trainable: int,
                         shape: dict[str, int], mean_tokens: float, completion_tokens: float,
                         device_mb: float | None = None) -> tuple[bool, str, dict[str, float]]:
    """(gradient checkpointing on, why, the memory estimate that goes with it).

    Checkpointing recomputes each layer in backward (~30% more compute) and turns off the
    shared-prefix pass (trainers.prefix_sharing_ok), so it is on only on CUDA, and there only
    when the activations without it would not fit the GPU (`device_mb`, else measured)."""
    plain = memory_estimate(config, device, total, trainable, shape, mean_tokens,
                            completion_tokens)
    if device != "cuda":
        return False, f"off on {device}: memory is not what limits it there", plain
    device_mb = gpu_memory_mb() if device_mb is None else device_mb
    if not device_mb:
        checked = memory_estimate(config, device, total, trainable, shape, mean_tokens,
                                  completion_tokens, checkpointing=True)
        return True, "on: the GPU's memory could not be read", checked
    budget = device_mb * GPU_MEMORY_USABLE
    if plain["total"] <= budget:
        return False, (f"off: ~{plain['total']:,.0f} MB without it fits "
                       f"{100 * GPU_MEMORY_USABLE:.0f}% of the GPU's {device_mb:,.0f} MB, so the "
                       "shared-prefix pass stays on"), plain
    checked = memory_estimate(config, device, total, trainable, shape, mean_tokens,
                              completion_tokens, checkpointing=True)
    return True, (f"on: ~{plain['total']:,.0f} MB without it exceeds "
                  f"{100 * GPU_MEMORY_USABLE:.0f}% of the GPU's {device_mb:,.0f} MB "
                  f"(~{checked['total']:,.0f} MB with it); the shared-prefix pass is off"), checked


def set_world(report: PreflightReport, config: TrainConfig, world_size: int,
              launch: str = "") -> PreflightReport:
    """Fill in the processes a run will have and what that makes of its batch and steps: each
    optimizer step takes per device x processes x accumulation rows. A run counted in epochs
    has that many times fewer steps; one counted in max_steps trains that many more rows."""
    from engine.training.distributed import describe_world

    world_size = max(1, world_size)
    previous = max(1, report.world_size)
    report.world_size, report.launch = world_size, launch
    report.global_batch = config.batch_size * config.grad_accum * world_size
    report.batch_detail = describe_world(config.batch_size, config.grad_accum, world_size)
    if config.max_steps <= 0 and world_size != previous:
        if report.batch_rows:
            per_step = config.batch_size * config.grad_accum * world_size
            report.steps = max(1, math.ceil(report.batch_rows / per_step * config.epochs))
        else:  # a recipe that does not say how many rows it batches
            report.steps = max(1, math.ceil(report.steps * previous / world_size))
    elif config.max_steps > 0 and report.device == "cpu" and report.train_seconds:
        # The processes share this CPU's cores: N times the rows take N times as long.
        extra = report.train_seconds * (world_size / previous - 1)
        report.train_seconds += extra
        report.est_seconds = (report.est_seconds or 0.0) + extra
    return report

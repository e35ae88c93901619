"""What the methods that always train a LoRA adapter (DPO, KTO, GRPO) share: the model they
load to start from, the policy they train, its memory plan (gradient checkpointing on CUDA, as
SFT decides it), its CPU set-up, and the adapter they save."""

from __future__ import annotations

from typing import Any

from engine.errors import ConfigError, TunedeckError
from engine.training.adapter_ref import resolve_adapter


def load_start(config: Any, progress: Any = None) -> Any:
    """The model a preference or RL run starts from: for an SFT adapter the base it was trained
    against (a QLoRA adapter's 4-bit base, `engine.adapter_base`), else the config's model."""
    from engine import adapter_base, models

    if not config.adapter:
        return models.load(config.model, progress=progress)
    say = progress or (lambda _text: None)
    try:
        plan = adapter_base.plan_base(config.adapter, model=config.model)
        plan.force_hint = ": set `model:` in the config to it"
        say(plan.line)
        loaded = adapter_base.load_base(plan, progress=progress)
    except TunedeckError as err:
        raise ConfigError(f"adapter: {err}") from None
    for warning in [*plan.warnings, *loaded.extras.get("base_warnings", [])]:
        say(f"warning: {warning}")
    return loaded


def start_policy(config: Any, model: Any) -> tuple[Any, Any]:
    """(model, peft_config) for the trainer: an SFT adapter loaded trainable (TRL then keeps a
    frozen copy of it as the reference), else the base and a fresh LoRA adapter of the config's
    shape for the trainer to add (the base, adapter disabled, is then the reference)."""
    import dataclasses

    if config.adapter:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(resolve_adapter(config.adapter)),
                                         is_trainable=True), None
    from engine.training.shared import peft_config

    return model, peft_config(dataclasses.replace(config, method="lora"))


def memory_config(config: Any, quantized: bool = False, sequences: int = 1) -> Any:
    """The config as the memory estimate sees these methods: a LoRA adapter of its shape (on a
    4-bit base: QLoRA's weights), each row `sequences` sequences in the trained pass (DPO runs
    chosen and rejected as one batch)."""
    import dataclasses

    return dataclasses.replace(config, method="qlora" if quantized else "lora",
                               batch_size=config.batch_size * max(1, sequences))


def starts_quantized(config: Any) -> bool:
    """Whether the run trains on a 4-bit base: from an SFT adapter trained on one (its base
    record, `engine.adapter_base`); a fresh adapter trains on the config's model unquantized."""
    if not config.adapter:
        return False
    try:
        from engine.adapter_base import read_record

        return read_record(config.adapter).quantization == "4bit"
    except Exception:  # an adapter that does not resolve: the config's own check names it
        return False


def _estimate(config: Any, device: str, quantized: bool, mean_tokens: float,
              completion_tokens: float, sequences: int) -> tuple[int, int, tuple[bool, str, Any]]:
    """(trainable, total parameters, SFT's `checkpointing_choice`) for the adapter these methods
    train; raises when the model does not build on the meta device."""
    from engine.training.preflight_checks import checkpointing_choice, parameters_for

    shaped = memory_config(config, quantized, sequences)
    trainable, total, shape = parameters_for(shaped)
    return trainable, total, checkpointing_choice(shaped, device, total, trainable, shape,
                                                  mean_tokens, completion_tokens)


def plan_memory(config: Any, report: Any, mean_tokens: float, completion_tokens: float,
                sequences: int = 1) -> None:
    """Pre-flight's parameter counts (as for a fresh LoRA adapter of the config's shape, what
    these methods train), memory estimate and gradient checkpointing, which on CUDA is on only
    where the activations would not fit without it: the decision `run_checkpointing` makes in
    the run. A model that does not build on the meta device is a warning, and checkpointing
    stays as the run then decides."""
    from engine.training.preflight_checks import NO_ESTIMATE

    on_cuda = report.device == "cuda"
    report.checkpointing = on_cuda
    report.checkpointing_reason = NO_ESTIMATE if on_cuda else f"off on {report.device}"
    try:
        trainable, total, choice = _estimate(config, report.device, starts_quantized(config),
                                             mean_tokens, completion_tokens, sequences)
    except Exception as err:  # a model we cannot build on meta: numbers unknown, not fatal
        report.warnings.append(f"parameters not counted ({type(err).__name__}: {err})")
        return
    report.trainable_params, report.total_params = trainable, total
    report.checkpointing, report.checkpointing_reason, report.memory_estimate_mb = choice


def run_checkpointing(config: Any, device: str, quantized: bool, mean_tokens: float,
                      completion_tokens: float, sequences: int = 1) -> tuple[bool, str]:
    """Gradient checkpointing for the run, from the same estimate as its pre-flight's
    (`plan_memory`): on CUDA only when the activations would not fit without it."""
    if device != "cuda":
        return False, f"off on {device}"
    from engine.training.preflight_checks import NO_ESTIMATE

    try:
        _, _, (on, why, _) = _estimate(config, device, quantized, mean_tokens,
                                       completion_tokens, sequences)
    except Exception:  # a model that does not build on the meta device: the safe side
        return True, NO_ESTIMATE
    return on, why


def prepare_on_cpu(trainer: Any, device: str) -> None:
    """On a CPU the adapter trains in fp32 (TRL casts it to bf16 for 4-bit bases), with the
    cheaper LoRA dropout (`prepare_cpu_training`)."""
    if device == "cpu":
        from engine.training.trainers import prepare_cpu_training

        prepare_cpu_training(trainer.model)


def save_adapter(run: Any, trainer: Any, tokenizer: Any, base: Any) -> None:
    """The trained adapter, its tokenizer and its base record; on rank 0 alone."""
    from engine.training.distributed import is_main_process

    if not is_main_process():
        return
    # Only the trained adapter: TRL's frozen "ref" copy (from an adapter) stays out.
    trainer.model.save_pretrained(str(run.adapter_dir), selected_adapters=["default"])
    tokenizer.save_pretrained(str(run.adapter_dir))
    from engine.adapter_base import write_record

    write_record(run.adapter_dir, base)

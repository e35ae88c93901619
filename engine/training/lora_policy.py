"""What the methods that always train a LoRA adapter (DPO, KTO, GRPO) share: the model they
load to start from, the policy they train, its CPU set-up, and the adapter they save."""

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


def count_adapter_parameters(config: Any, report: Any) -> None:
    """The report's parameter counts as for a fresh LoRA adapter of the config's shape (what
    these methods train); a warning instead when the model does not build on the meta device."""
    import dataclasses

    from engine.training.preflight_checks import parameters_for

    try:
        trainable, total, _ = parameters_for(dataclasses.replace(config, method="lora"))
        report.trainable_params, report.total_params = trainable, total
    except Exception as err:  # a model we cannot build on meta: numbers unknown, not fatal
        report.warnings.append(f"parameters not counted ({type(err).__name__}: {err})")


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

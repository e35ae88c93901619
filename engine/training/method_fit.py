"""`method: auto` → the fine-tuning method that fits the device the run will use.

On CUDA, QLoRA: a 4-bit base frees memory for batch and length at little cost in quality. On a
CPU, plain LoRA on full-precision weights: bitsandbytes' CPU path de-quantizes every 4-bit weight
on every matmul, so a QLoRA step is slower than a LoRA step at the same quality (bench/
train_throughput.py measures both), and the adapter then also needs the 4-bit base to behave as
trained. The resolved method is what the run directory records, so the adapter says what it is.
"""

from __future__ import annotations

from dataclasses import replace

from engine.training.config import TrainConfig

AUTO = "auto"


def fit_method(config: TrainConfig, device: str | None = None) -> tuple[TrainConfig, str]:
    """(`config` with a concrete method, the reason) — unchanged, with no reason, unless its
    method is `auto`."""
    if config.method != AUTO:
        return config, ""
    from engine import models

    policy = models.device_policy(device)
    if policy.device.startswith("cuda"):
        ok, why = models.probe_4bit(policy.device)
        if ok:
            return replace(config, method="qlora"), (
                "method auto → qlora: on CUDA a 4-bit nf4 base leaves memory for batch and length")
        return replace(config, method="lora"), (
            f"method auto → lora: 4-bit is not available on this GPU ({why})")
    return replace(config, method="lora"), (
        f"method auto → lora: on {policy.device} a 4-bit base is de-quantized on every matmul, so "
        "LoRA on full-precision weights reaches the same quality in fewer minutes")

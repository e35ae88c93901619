"""The settings whose default depends on the method, in one place: the config, the Train form's
fitted defaults and docs/training.md's table read them from here (a test holds the docs to it).

Why these numbers: LoRA-family adapters train at about 1e-4 to 1e-3 (2e-4 is the common start,
QLoRA paper); a full fine-tune of every weight moves them ten times less (2e-5); preference
training (DPO / KTO) starts from a model that already answers and only tilts it, so TRL's
examples and the alignment handbook's LoRA recipes train at 5e-6 to 5e-7 — 5e-6 for an adapter;
GRPO too (TRL's GRPO examples with LoRA: 1e-6 to 1e-5), since it samples from the model it moves.
"""

from __future__ import annotations

LEARNING_RATE = {
    "auto": 2e-4,  # resolves to lora or qlora (method_fit.py)
    "lora": 2e-4,
    "qlora": 2e-4,
    "dora": 2e-4,
    "full": 2e-5,
    "dpo": 5e-6,
    "kto": 5e-6,
    "grpo": 5e-6,
}

# How far the policy may move from its reference: DPO / KTO's 0.1 (TRL, the DPO paper); GRPO's
# KL term is weaker (DeepSeekMath's 0.04) since its rewards, not a reference, say what is good.
BETA = {"dpo": 0.1, "kto": 0.1, "grpo": 0.04}


def learning_rate(method: str) -> float:
    """The default learning rate of a method (2e-4 for a name validation will refuse anyway)."""
    return LEARNING_RATE.get(method, 2e-4)


def beta(method: str) -> float:
    """The default KL weight of a method (0.1 where the method has none: SFT ignores it)."""
    return BETA.get(method, 0.1)

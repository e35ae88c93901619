"""LoRA dropout that costs a quarter of `nn.Dropout` on a CPU.

A profile of a LoRA step on a 2-core CPU puts `aten::bernoulli_` at 23% of the CPU time: every
one of the 210 adapted layers of SmolLM2-135M draws one float per input element for a 5% dropout.
Here the mask comes from 16 random bits per element (four elements per full-range 64-bit draw,
one signed compare per lane), and the backward pass keeps a bool mask. The distribution is the
same Bernoulli keep-mask up to `p` rounded to 1/65536, scaled so that the expectation is
unchanged; the draws come from torch's CPU generator, so seeds and a resumed run's RNG state hold
as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_LEVELS = 1 << 16  # every bit of a 16-bit lane is random: the draws span the whole int64 range
_INT64_MIN = -(1 << 63)


def _keep_mask(shape: torch.Size, threshold: int) -> torch.Tensor:
    """Bool mask, True with probability 1 - threshold/65536. `random_(min, None)` is torch's
    full-range kernel; plain `random_()` draws [0, 2^63), whose top lane would lose a bit."""
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(_INT64_MIN, None)
    return (bits.view(torch.int16)[:n] >= threshold - (_LEVELS >> 1)).view(shape)


def _apply(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    # Measured on (8, 150, 576): for fp32, multiplying by the bool mask then scaling in place is
    # 3x cheaper than `where`; for bf16 `where` is the cheaper one.
    if x.dtype == torch.float32:
        return x.mul(keep).mul_(scale)
    return torch.where(keep, x * scale, 0)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
        keep = _keep_mask(x.shape, threshold)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _apply(x, keep, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return _apply(grad, keep, ctx.scale), None, None


class FastDropout(nn.Module):
    """`nn.Dropout(p)` for CPU tensors, from 16-bit draws; identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * _LEVELS)
        self.scale = 1.0 / (1.0 - self.threshold / _LEVELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":  # the draws are CPU draws; elsewhere the stock kernel
            return nn.functional.dropout(x, self.p, True)
        return _MaskedScale.apply(x, self.threshold, self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def install_fast_dropout(model: Any) -> int:
    """Swap every PEFT `lora_dropout` `nn.Dropout` for a `FastDropout` of the same p; returns how
    many. Only dropout inside `lora_dropout` containers changes: the model's own dropouts stay."""
    n = 0
    for module in model.modules():
        container = getattr(module, "lora_dropout", None)
        if not isinstance(container, nn.ModuleDict):
            continue
        for name, drop in list(container.items()):
            if type(drop) is nn.Dropout and drop.p > 0:
                container[name] = FastDropout(drop.p)
                container[name].train(drop.training)
                n += 1
    return n

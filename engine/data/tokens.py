"""Token counting with the model's own tokenizer, shared by validation and statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.data.schema import Example


class TokenCounter:
    """Counts prompt and completion tokens; `overhead` is what the chat template adds."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.overhead = template_overhead(tokenizer)

    def lengths(self, examples: Sequence[Example]) -> list[tuple[int, int]]:
        prompts = [ex.user_text() or "" for ex in examples]
        targets = [longest_target(ex) for ex in examples]
        enc = self.tokenizer(prompts + targets, add_special_tokens=False)["input_ids"]
        n = len(examples)
        return [(len(enc[i]), len(enc[n + i])) for i in range(n)]


def longest_target(ex: Example) -> str:
    if ex.chosen or ex.rejected:
        return ex.chosen if len(ex.chosen) >= len(ex.rejected) else ex.rejected
    return ex.completion


def template_overhead(tokenizer: Any) -> int:
    """Tokens the chat template adds around one user turn and one answer (roles, BOS/EOS,
    a default system prompt)."""
    user, answer = "x", "y"
    bare = len(tokenizer(user, add_special_tokens=False)["input_ids"]) + \
        len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return max(0, len(ids) - bare)
    return len(tokenizer("x y")["input_ids"]) - len(
        tokenizer("x y", add_special_tokens=False)["input_ids"])

"""The ratings records read from the database (its tables are one migration in
`engine.migrations`) and the names every ratings module shares. Imports no other ratings module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("try", "sample", "eval", "ab", "manual")
CHOICES = ("a", "b", "tie")
FORMATS = ("sft", "dpo", "kto")
GOOD_STARS = 4  # stars at or above: accepted / desirable
BAD_STARS = 2  # stars at or below: undesirable


# --------------------------------------------------------------------------- records


@dataclass
class Rating:
    thumbs: int | None = None  # 1 up, -1 down
    stars: int | None = None  # 1..5
    ideal: str | None = None  # corrected completion
    comment: str | None = None
    updated_at: str | None = None

    @property
    def judged(self) -> bool:
        return self.thumbs is not None or self.stars is not None or bool(self.ideal)

    def verdict(self, good: int = GOOD_STARS, bad: int = BAD_STARS) -> bool | None:
        """True accepted, False rejected, None neutral/unjudged; thumbs outrank stars."""
        if self.thumbs is not None:
            return self.thumbs > 0
        if self.stars is not None:
            if self.stars >= good:
                return True
            if self.stars <= bad:
                return False
        return None


@dataclass
class Completion:
    id: int
    created_at: str
    source: str
    source_ref: str | None
    prompt: str
    messages: list[dict[str, str]] | None
    prompt_text: str
    completion: str
    model: str = ""
    adapter: str | None = None
    run_id: str | None = None
    template: str | None = None
    strategy: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    try_id: int | None = None
    rating: Rating = field(default_factory=Rating)

    kind = "completion"

    @property
    def rated(self) -> bool:
        return self.rating.judged

    def prompt_key(self) -> str:
        """Completions answer the same prompt when the model saw the same input."""
        if self.messages is not None:
            return json.dumps(self.messages, ensure_ascii=False, sort_keys=True)
        return self.prompt_text or self.prompt


@dataclass
class Pair:
    id: int
    created_at: str
    a: Completion
    b: Completion
    choice: str | None = None
    comment: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    kind = "pair"

    @property
    def rated(self) -> bool:
        return self.choice is not None

    @property
    def source(self) -> str:
        return "ab"

    @property
    def prompt(self) -> str:
        return self.a.prompt


QueueItem = Completion | Pair
_UNSET: Any = object()


def _dumps(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False, default=str)


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


_CHATML = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>\n?", re.S)


def chatml_messages(text: str) -> list[dict[str, str]] | None:
    """The messages of a ChatML prompt (the default model's template), else None.

    Tries record the rendered prompt, not its messages; recovering them lets an export of
    playground tries be conversational, so the trainer re-applies the template itself.
    """
    messages, pos = [], 0
    for match in _CHATML.finditer(text):
        if match.start() != pos:
            return None
        messages.append({"role": match.group(1), "content": match.group(2)})
        pos = match.end()
    if not messages or text[pos:] not in ("", "<|im_start|>assistant\n"):
        return None
    return messages

"""Prompting strategies: zero-shot, few-shot, chain-of-thought and self-consistency.

`build_prompt` turns a template, the user's values and a strategy into the exact tokens fed to the
model. In chat mode the turns go through the tokenizer's own chat template, which owns the special
tokens: the rendered text is tokenized without adding any, so there is exactly one BOS (applying a
template as text and tokenizing it with special tokens doubles BOS, trl #1400). Raw mode is plain
completion text for base models.

Few-shot examples that do not fit the context window are dropped with a warning; the user's own
input is never cut: when it alone does not fit, `build_prompt` raises.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import TunedeckError
from engine.generation import common_prefix
from engine.templates import PromptTemplate, TemplateError, render_system, render_text

KINDS = ("zero-shot", "few-shot", "cot", "few-shot-cot", "self-consistency")
CHAIN_OF_THOUGHT_KINDS = ("cot", "few-shot-cot", "self-consistency")
SELECTIONS = ("first", "random", "similar")
DEFAULT_WINDOW = 2048
# An "Answer: …" line (last one wins); "the answer is …" as a fallback for chatty models.
ANSWER_LINE = re.compile(r"^[ \t*#>-]*(?:final[ \t]+)?answer[ \t*]*[:：][ \t*]*(.+?)[ \t*]*$",
                         re.IGNORECASE | re.MULTILINE)
ANSWER_PHRASE = re.compile(r"\bthe (?:final )?answer is[ \t:]*\**([^\n]+?)\**[ \t]*(?:\.[ \t]*)?$",
                           re.IGNORECASE | re.MULTILINE)


@dataclass
class StrategyConfig:
    kind: str = "zero-shot"
    k: int = 3
    selection: str = "first"
    seed: int = 0
    cot_trigger: str = "Let's think step by step."
    answer_pattern: str | None = None
    samples: int = 5
    chat: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TunedeckError(f"Unknown strategy '{self.kind}'. Use one of: {', '.join(KINDS)}.")
        if self.selection not in SELECTIONS:
            raise TunedeckError(f"Unknown example selection '{self.selection}'. "
                                f"Use one of: {', '.join(SELECTIONS)}.")
        if self.k < 0:
            raise TunedeckError(f"k must be 0 or more, not {self.k}.")
        if self.samples < 1:
            raise TunedeckError(f"samples must be at least 1, not {self.samples}.")
        if self.answer_pattern:
            try:
                re.compile(self.answer_pattern)
            except re.error as err:
                raise TunedeckError(f"answer pattern {self.answer_pattern!r} is not a valid "
                                    f"regular expression: {err}") from None

    @property
    def uses_examples(self) -> bool:
        return self.kind in ("few-shot", "few-shot-cot", "self-consistency") and self.k > 0

    @property
    def chain_of_thought(self) -> bool:
        return self.kind in CHAIN_OF_THOUGHT_KINDS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Budget:
    used: int
    available: int  # context_window - max_new_tokens
    window: int

    @property
    def fits(self) -> bool:
        return self.used <= self.available

    @property
    def remaining(self) -> int:
        return self.available - self.used


@dataclass
class BuiltPrompt:
    messages: list[dict] | None
    text: str
    input_ids: list[int]
    prefix_len: int
    examples_used: int
    examples_dropped: int
    warnings: list[str]
    budget: Budget


# --------------------------------------------------------------------------- examples


def _get(example: Any, name: str) -> Any:
    if isinstance(example, dict):
        return example.get(name)
    value = getattr(example, name, None)
    if value is None:
        value = (getattr(example, "extra", None) or {}).get(name)
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def example_values(example: Any) -> dict[str, Any]:
    """The template variables an example provides (its extra columns too)."""
    values: dict[str, Any] = {}
    extra = example.get("extra") if isinstance(example, dict) else getattr(example, "extra", None)
    if isinstance(extra, dict):
        values.update(extra)
    for name in ("instruction", "prompt", "completion", "system", "rationale", "answer"):
        values[name] = _text(_get(example, name))
    return values


def _where(example: Any) -> str:
    line = _get(example, "line")
    return f"example at line {line}" if line else "an example"


def example_response(example: Any, chain_of_thought: bool) -> str:
    """What the assistant says in a shown example."""
    completion = _text(_get(example, "completion")).strip()
    answer = _text(_get(example, "answer")).strip()
    if not chain_of_thought:
        if completion:
            return completion
        if answer:
            return answer
        raise TunedeckError(f"{_where(example)} has no completion (or answer) to show as a "
                            "few-shot example; add a 'completion' field.")
    rationale = _text(_get(example, "rationale")).strip()
    if rationale:
        final = answer or extract_answer(completion) or completion
        if not final:
            raise TunedeckError(f"{_where(example)} has a rationale but no answer; add an "
                                "'answer' (or 'completion') field.")
        return f"{rationale}\nAnswer: {final}"
    if completion and extract_answer(completion) is not None:
        return completion  # the completion already reasons and ends with an answer line
    raise TunedeckError(f"{_where(example)} has no 'rationale' field: chain-of-thought examples "
                        "need one (and an 'answer'). Use the few-shot strategy for this data, or "
                        "add rationales.")


# Function words carry no topic; on a small dataset BM25's IDF would otherwise rank them high.
_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "i", "if", "in", "is", "it", "its", "my", "no", "not", "of", "on", "or", "so", "that", "the", "their", "this", "to", "was", "we", "were", "what", "when", "which", "who", "will", "with", "you", "your"])


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"\w+", text.lower()) if w not in _STOPWORDS]


# One index, for the dataset last used: the Playground rebuilds its prompt on every keystroke.
_BM25_LOCK = threading.Lock()
_BM25_LAST: tuple[Any, int, Any] | None = None


def _bm25_index(source: Sequence[Any], pool: list[Any]) -> Any:
    global _BM25_LAST
    with _BM25_LOCK:
        last = _BM25_LAST
        if last is not None and last[0] is source and last[1] == len(pool):
            return last[2]
    from rank_bm25 import BM25Okapi

    # Instructions count too (alpaca-style rows often have an empty input); words shared by every
    # row get a near-zero IDF, so a repeated instruction carries no weight.
    corpus = [_words(" ".join(_text(_get(e, n)) for n in ("instruction", "prompt")))
              for e in pool]
    index = BM25Okapi([doc or ["\u2400"] for doc in corpus]) if any(corpus) else None
    with _BM25_LOCK:
        _BM25_LAST = (source, len(pool), index)
    return index


def select_examples(examples: Sequence[Any], strategy: StrategyConfig,
                    query: str = "") -> list[Any]:
    """k examples, ordered most relevant first (the order in which they survive the budget)."""
    pool = list(examples)
    k = min(strategy.k, len(pool))
    if k <= 0:
        return []
    if strategy.selection == "first":
        return pool[:k]
    if strategy.selection == "random":
        return random.Random(strategy.seed).sample(pool, k)
    index = _bm25_index(examples, pool)
    query_words = _words(query)
    if index is None or not query_words:
        return pool[:k]
    scores = index.get_scores(query_words)
    # Stable: equal scores keep dataset order, so no overlap at all degrades to first-k.
    ranked = sorted(range(len(pool)), key=lambda i: -scores[i])
    return [pool[i] for i in ranked[:k]]


# --------------------------------------------------------------------------- building


def _ids(encoded: Any) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def _wants_chat(tokenizer: Any, strategy: StrategyConfig) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if strategy.chat is None:
        return has_template
    if strategy.chat and not has_template:
        raise TunedeckError("Chat mode needs a tokenizer with a chat template and this model has "
                            "none; use raw mode (a base model completes plain text).")
    return strategy.chat


def _user_text(template: PromptTemplate, values: dict, strategy: StrategyConfig,
               with_trigger: bool) -> str:
    text = render_text(template, values).strip()
    if with_trigger and strategy.cot_trigger.strip():
        text = f"{text}\n{strategy.cot_trigger.strip()}"
    return text


def _raw_block(prompt: str, response: str) -> str:
    # A prompt ending in a cue ("SQL:", "Sentiment:") reads best with the answer on the same line.
    sep = " " if prompt.rstrip().endswith(":") else "\n"
    return f"{prompt}{sep}{response}"


def _apply_chat_template(tokenizer: Any, messages: list[dict]) -> tuple[list[dict], str]:
    """The messages as sent and the text the tokenizer's chat template makes of them."""
    from jinja2.exceptions import TemplateError as JinjaError

    try:
        return messages, tokenizer.apply_chat_template(messages, tokenize=False,
                                                       add_generation_prompt=True)
    except JinjaError as err:
        if not (messages and messages[0]["role"] == "system"):
            raise TunedeckError(f"The model's chat template failed: {err}") from None
    # Some chat templates reject a system turn; fold it into the first user turn.
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    try:
        return rest, tokenizer.apply_chat_template(rest, tokenize=False,
                                                   add_generation_prompt=True)
    except JinjaError as err:
        raise TunedeckError(f"The model's chat template failed: {err}") from None


def _render(template: PromptTemplate, values: dict, shots: list[tuple[str, str]],
            strategy: StrategyConfig, tokenizer: Any, chat: bool,
            ) -> tuple[list[dict] | None, str, list[int]]:
    system = render_system(template, values)
    user = _user_text(template, values, strategy,
                      with_trigger=strategy.chain_of_thought and not shots)
    if chat:
        messages: list[dict] = [{"role": "system", "content": system}] if system else []
        for prompt, response in shots:
            messages += [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": response}]
        messages.append({"role": "user", "content": user})
        messages, text = _apply_chat_template(tokenizer, messages)
        # The chat template already wrote every special token (BOS included) as text.
        return messages, text, _ids(tokenizer(text, add_special_tokens=False))
    parts = [system] if system else []
    parts += [_raw_block(p, r) for p, r in shots]
    parts.append(user)
    text = "\n\n".join(parts)
    # Raw text has no special tokens of its own: the tokenizer adds its BOS if it uses one.
    return None, text, _ids(tokenizer(text))


def _window(tokenizer: Any, context_window: int | None) -> int:
    if context_window:
        return int(context_window)
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (1e30).
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else DEFAULT_WINDOW


def build_prompt(template: PromptTemplate, values: dict, tokenizer: Any,
                 strategy: StrategyConfig | None = None, examples: Sequence[Any] = (),
                 max_new_tokens: int = 256, context_window: int | None = None) -> BuiltPrompt:
    """The exact prompt for one input under a strategy, within the context budget."""
    strategy = strategy or StrategyConfig()
    chat = _wants_chat(tokenizer, strategy)
    window = _window(tokenizer, context_window)
    available = window - max_new_tokens
    if available <= 0:
        raise TunedeckError(f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in "
                            f"the {window}-token context window; lower max_new_tokens.")
    chosen: list[Any] = []
    # Self-consistency samples chain-of-thought answers: few-shot when examples are given,
    # zero-shot (with the trigger) otherwise.
    if strategy.uses_examples and (examples or strategy.kind != "self-consistency"):
        if not examples:
            raise TunedeckError(f"The {strategy.kind} strategy needs examples: load a dataset "
                                "(--data FILE) or set k to 0.")
        query = " ".join(_text(v) for v in values.values())
        chosen = select_examples(examples, strategy, query)
    shots: list[tuple[str, str]] = []
    for example in chosen:
        try:
            # What the data leaves empty (an instruction, a style) keeps the user's value; the
            # example's own input is always its own.
            own = {k: v for k, v in example_values(example).items() if v != "" or k == "prompt"}
            prompt = _user_text(template, {**values, **own}, strategy, with_trigger=False)
        except TemplateError as err:
            raise TunedeckError(f"{_where(example)}: {err}") from None
        shots.append((prompt, example_response(example, strategy.chain_of_thought)))

    warnings: list[str] = []
    used_shots = len(shots)
    while True:
        messages, text, ids = _render(template, values, shots[:used_shots], strategy,
                                      tokenizer, chat)
        if len(ids) <= available or used_shots == 0:
            break
        used_shots -= 1
    if len(ids) > available:
        raise TunedeckError(
            f"The input alone is {len(ids)} tokens, more than the {available} available "
            f"({window}-token window minus max_new_tokens {max_new_tokens}). It is not cut: "
            "shorten the input or lower max_new_tokens.")
    dropped = len(shots) - used_shots
    if dropped:
        noun = "example" if dropped == 1 else "examples"
        warnings.append(f"{dropped} few-shot {noun} dropped: they do not fit the context "
                        f"({available} tokens available after max_new_tokens {max_new_tokens}).")
    if chosen and len(chosen) < strategy.k:
        warnings.append(f"Only {len(chosen)} examples available for k={strategy.k}.")

    prefix_len = _prefix_len(template, values, shots[:used_shots], strategy, tokenizer, chat, ids)
    return BuiltPrompt(messages=messages, text=text, input_ids=ids, prefix_len=prefix_len,
                       examples_used=used_shots, examples_dropped=dropped, warnings=warnings,
                       budget=Budget(used=len(ids), available=available, window=window))


def _prefix_len(template: PromptTemplate, values: dict, shots: list[tuple[str, str]],
                strategy: StrategyConfig, tokenizer: Any, chat: bool, ids: list[int]) -> int:
    """Leading tokens that do not depend on the input (system + examples).

    The input is the `prompt` value when there is one: other variables (an instruction, a schema)
    describe the task and stay the same from one input to the next. Found by rendering the same
    prompt for two other inputs and taking the common token prefix, which follows the
    tokenizer's merges across the boundary instead of guessing where it is.
    """
    varying = ["prompt"] if "prompt" in values else list(values)
    length = len(ids)
    for marker in ("0", "1"):
        other = {**values, **{key: marker for key in varying}}
        try:
            _, _, other_ids = _render(template, other, shots, strategy, tokenizer, chat)
        except TunedeckError:
            return 0
        length = min(length, common_prefix(ids, other_ids))
    return length


# --------------------------------------------------------------------------- answers


def extract_answer(text: str, pattern: str | None = None) -> str | None:
    """The final answer in a completion: the last match of `pattern` (group 1 if it has one), by
    default the last "Answer: …" line, else the last "the answer is …"."""
    if not text:
        return None
    if pattern:
        matches = list(re.finditer(pattern, text, re.MULTILINE))
        if not matches:
            return None
        last = matches[-1]
        value = last.group(1) if last.re.groups else last.group(0)
        return value.strip() if value is not None else None
    for regex in (ANSWER_LINE, ANSWER_PHRASE):
        matches = list(regex.finditer(text))
        if matches:
            value = matches[-1].group(1).strip()
            return value.rstrip(".").strip() or None
    return None


def normalize_answer(answer: str) -> str:
    """Equal answers written differently vote together: case, spacing, 1,000 / 1000.0 / $1000."""
    value = re.sub(r"\s+", " ", answer.strip().strip("*`\"'").rstrip(".")).casefold()
    number = value.replace(",", "").lstrip("$").rstrip("%").strip()
    try:
        as_float = float(number)
    except ValueError:
        return value
    return str(int(as_float)) if as_float.is_integer() else repr(as_float)


def majority_vote(answers: list[str | None]) -> tuple[str | None, float]:
    """The most common answer and the share of all samples that gave it (ties: first seen)."""
    if not answers:
        return None, 0.0
    counts: Counter[str] = Counter()
    first_form: dict[str, str] = {}
    for answer in answers:
        if answer is None or not answer.strip():
            continue
        key = normalize_answer(answer)
        counts[key] += 1
        first_form.setdefault(key, answer.strip())
    if not counts:
        return None, 0.0
    key, count = counts.most_common(1)[0]
    return first_form[key], count / len(answers)


@dataclass
class Vote:
    answer: str | None
    agreement: float
    answers: list[str | None] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)

    @property
    def winner(self) -> str:
        """The first completion that gave the voted answer (the first one when none did)."""
        if self.answer is not None:
            key = normalize_answer(self.answer)
            for text, answer in zip(self.completions, self.answers, strict=True):
                if answer is not None and answer.strip() and normalize_answer(answer) == key:
                    return text
        return self.completions[0] if self.completions else ""


def vote(completions: Sequence[str], answer_of: Callable[[str], str | None]) -> Vote:
    """The self-consistency vote over sampled completions: each one's answer (`answer_of`),
    the majority and its share."""
    answers = [answer_of(c) for c in completions]
    answer, agreement = majority_vote(answers)
    return Vote(answer, agreement, answers, list(completions))


def self_consistency(sample: Callable[[int], str], samples: int, pattern: str | None = None,
                     answer_of: Callable[[str], str | None] | None = None,
                     stop: Callable[[], bool] | None = None) -> Vote:
    """Draw `samples` completions (`sample(i)` generates the i-th, with sampling on) and vote.

    The one self-consistency of tunedeck: the Playground and `tunedeck prompt` sample through
    `engine.strategy_run`, the evaluator votes over its batched samples with `vote`. Answers are
    read with `answer_of` (default: `extract_answer` with `pattern`); `stop()` true after a sample
    ends the drawing early (a cancel), and the vote is over what was drawn."""
    completions: list[str] = []
    for index in range(samples):
        completions.append(sample(index))
        if stop is not None and stop():
            break
    return vote(completions, answer_of or (lambda text: extract_answer(text, pattern)))

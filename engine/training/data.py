"""Examples → conversational prompt/completion → token ids with completion-only labels.

The tokenizer's chat template owns every special token: the prompt is rendered with
``add_generation_prompt=True`` and the whole conversation without it, and the labels mask the
shared prefix (TRL's prompt-completion recipe). Tokens the template adds after the final EOS (a
newline for ChatML) are dropped, so the last trained token is the EOS a generation stops on.
The same code feeds the trainer and the pre-flight view, so what pre-flight shows is what trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, TunedeckError

IGNORE = -100


@dataclass
class Conversation:
    prompt: list[dict[str, str]]  # messages up to (not including) the answer
    completion: list[dict[str, str]]  # the assistant answer
    reference: str  # the answer's text (shown next to samples)
    line: int | None = None


# --------------------------------------------------------------------------- loading


def load_examples(path: Path, mapping: dict[str, str], split: str,
                  limit: int | None = None) -> list[Any]:
    """Examples of one split, through the data module (engine.data) where it is installed."""
    try:
        from engine.data import load_examples as _load
    except ImportError:
        _load = None
    if _load is not None:
        return list(_load(path, mapping or None, split if path.is_dir() else None, limit=limit))
    file = split_file(path, split)
    if file is None:
        raise ConfigError(f"{path}: no {split} split found.")
    rows = []
    for n, row in enumerate(load_jsonl_rows(file), 1):
        row = {mapping.get(k, k): v for k, v in row.items()}
        row.setdefault("line", n)
        rows.append(row)
    return rows[:limit] if limit is not None else rows


def split_file(path: Path, split: str) -> Path | None:
    """The file holding `split`: the file itself, or the split's file in a folder (the one rule
    is engine.data.split_files)."""
    from engine.data.split_files import split_file as _split_file

    return _split_file(path, split)


def has_split(path: Path, split: str) -> bool:
    return split_file(path, split) is not None


def conversations(path: Path, mapping: dict[str, str], split: str,
                  limit: int | None = None, template: str | None = None) -> list[Conversation]:
    """The split's examples as conversations (an empty list when the split does not exist).
    With `template` (a prompt-lab template name) the prompt is that template's zero-shot prompt,
    so an adapter trains on exactly what the Playground and the evaluator send it."""
    if not has_split(path, split):
        return []
    examples = load_examples(path, mapping, split, limit)
    if template:
        from engine.templates import get_template

        chosen = get_template(template)
        return [templated_conversation(ex, chosen) for ex in examples]
    return [to_conversation(ex) for ex in examples]


def _get(example: Any, name: str) -> Any:
    if isinstance(example, dict):
        return example.get(name)
    return getattr(example, name, None)


def to_conversation(example: Any) -> Conversation:
    """One example (engine.data `Example` or a dict) → prompt messages + assistant completion."""
    line = _get(example, "line")
    messages = _get(example, "messages")
    if messages:
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise TunedeckError(f"line {line}: a conversation needs a user turn followed by an "
                                "assistant answer to train on.")
        return Conversation(messages[:last], [messages[last]], messages[last]["content"], line)
    user_parts = [p for p in (_get(example, "instruction"), _get(example, "prompt")) if p]
    completion = _get(example, "completion")
    if not completion:
        rationale, answer = _get(example, "rationale"), _get(example, "answer")
        if answer:
            completion = f"{rationale}\nAnswer: {answer}" if rationale else str(answer)
    if not user_parts or not completion:
        raise TunedeckError(
            f"line {line}: an SFT example needs a prompt (or instruction) and a completion; map "
            "your columns with mapping (e.g. mapping: {question: prompt, query: completion})."
        )
    prompt: list[dict[str, str]] = []
    if _get(example, "system"):
        prompt.append({"role": "system", "content": str(_get(example, "system"))})
    prompt.append({"role": "user", "content": "\n\n".join(str(p) for p in user_parts)})
    completion = str(completion)
    return Conversation(prompt, [{"role": "assistant", "content": completion}], completion, line)


def templated_conversation(example: Any, template: Any) -> Conversation:
    """One example through a prompt template: its system message (if any) and its user turn, as
    `engine.strategies.build_prompt` renders them for a zero-shot chat prompt."""
    from engine.strategies import example_values
    from engine.templates import render_system, render_text

    base = to_conversation(example)  # the completion, and the same errors for a bad row
    values = example_values(example)
    try:
        system, user = render_system(template, values), render_text(template, values).strip()
    except TunedeckError as err:
        raise TunedeckError(f"line {base.line}: template {template.name!r}: {err}") from None
    prompt = [{"role": "system", "content": system}] if system else []
    prompt.append({"role": "user", "content": user})
    return Conversation(prompt, base.completion, base.reference, base.line)


# --------------------------------------------------------------------------- tokenizing


def _template_ids(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def prompt_ids(tokenizer: Any, conv: Conversation) -> list[int]:
    """The prompt as generation sees it (ends with the assistant header)."""
    return _template_ids(tokenizer, conv.prompt, add_generation_prompt=True)


def tokenize(tokenizer: Any, conv: Conversation, max_seq_len: int,
             completion_only: bool = True) -> dict[str, list[int]]:
    """input_ids and labels (-100 where no loss is taken) for one conversation."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunedeckError("The model's tokenizer has no chat template; tunedeck trains "
                            "conversational prompt/completion data and needs one.")
    p_ids = prompt_ids(tokenizer, conv)
    full = _template_ids(tokenizer, conv.prompt + conv.completion)
    eos = tokenizer.eos_token_id
    if eos is not None and eos in full[len(p_ids):]:
        last_eos = len(full) - 1 - full[::-1].index(eos)
        full = full[: last_eos + 1]
    # Where prompt and conversation diverge is where the completion starts (TRL does the same).
    start = 0
    for a, b in zip(p_ids, full, strict=False):
        if a != b:
            break
        start += 1
    labels = [IGNORE] * start + full[start:] if completion_only else list(full)
    return {"input_ids": full[:max_seq_len], "labels": labels[:max_seq_len]}


def build_dataset(tokenizer: Any, convs: list[Conversation], max_seq_len: int,
                  completion_only: bool = True) -> tuple[Any, int]:
    """A `datasets.Dataset` of input_ids / labels, and how many rows truncation left untrained."""
    from datasets import Dataset

    rows = [tokenize(tokenizer, c, max_seq_len, completion_only) for c in convs]
    kept = [r for r in rows if any(label != IGNORE for label in r["labels"])]
    dataset = Dataset.from_list(kept) if kept else Dataset.from_dict({"input_ids": [], "labels": []})
    return dataset, len(rows) - len(kept)


def pack(dataset: Any, max_seq_len: int) -> Any:
    """Whole examples packed best-fit-decreasing into rows of up to `max_seq_len` tokens (TRL's
    `pack_dataset`); each row lists its examples' lengths in `seq_lengths`."""
    from trl.data_utils import pack_dataset

    return pack_dataset(dataset, max_seq_len, "bfd")


def load_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """Plain JSONL rows, for tools that read data without a column mapping (bench)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if raw.strip():
                try:
                    rows.append(json.loads(raw))
                except ValueError as err:
                    raise ConfigError(f"{path} line {n}: not valid JSON ({err}).") from None
    return rows

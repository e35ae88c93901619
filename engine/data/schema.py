"""The one internal example form, schema detection, and row normalization.

Every supported layout (the seed format, TRL prompt/completion, `messages`, `text`, Alpaca,
preference, unpaired preference) becomes an `Example`. `check_row` returns the problems of one
row (missing/empty/wrong-typed fields) as plain tuples, so the validator and the loader share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMAS = ("seed", "prompt_completion", "conversational", "messages", "text", "alpaca",
           "preference", "unpaired_preference")

# Schemas that may share one file: the seed format is prompt/completion with an optional
# instruction, so rows with and without `instruction` are one dataset, not a mix.
_FAMILY = {"seed": "prompt_completion", "prompt_completion": "prompt_completion"}

# Columns each schema needs (after the column mapping); `rationale`/`answer` may stand in for a
# missing completion in the seed format.
REQUIRED: dict[str, tuple[str, ...]] = {
    "seed": ("prompt", "completion"),
    "prompt_completion": ("prompt", "completion"),
    "conversational": ("prompt", "completion"),
    "messages": ("messages",),
    "text": ("text",),
    "alpaca": ("instruction", "output"),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired_preference": ("prompt", "completion", "label"),
}

# Columns that carry a meaning of their own (everything else lands in `Example.extra`).
KNOWN_COLUMNS = {"prompt", "completion", "instruction", "system", "rationale", "answer", "chosen",
                 "rejected", "label", "messages", "text", "input", "output"}


@dataclass
class Example:
    """The normalized form consumed by trainers, prompt strategies and evaluation."""

    prompt: str  # the user input (for `messages` data: the last user turn)
    completion: str = ""  # the target answer ("" for preference rows)
    instruction: str = ""  # task instruction (seed format / alpaca instruction)
    system: str = ""
    rationale: str = ""  # chain-of-thought rationale, when the data has one
    answer: str = ""  # final answer, when the data has one
    chosen: str = ""
    rejected: str = ""
    label: bool | None = None  # unpaired preference (KTO)
    messages: list[dict] | None = None  # conversational source, as given
    line: int = 0  # 1-based source line (JSONL) or row number (CSV/Parquet)
    extra: dict = field(default_factory=dict)  # columns not mapped

    def user_text(self) -> str:
        """The user turn as prompts present it: the instruction, a blank line, the input."""
        if self.instruction and self.prompt:
            return f"{self.instruction}\n\n{self.prompt}"
        return self.instruction or self.prompt

    def target(self) -> str:
        """What a model is trained to produce (the chosen answer for preference rows)."""
        return self.completion or self.chosen

    def key(self) -> tuple:
        """Identity for duplicate and leakage checks: everything training reads from the row
        (the whole conversation too), not the line."""
        turns = tuple((m.get("role"), m.get("content")) for m in self.messages or ())
        return (self.system, self.instruction, self.prompt, self.completion, self.rationale,
                self.answer, self.chosen, self.rejected, self.label, turns)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_schema(columns: Iterable[str], row: dict | None = None) -> str:
    """Name the layout of a row from its column names (and, when given, its values).

    `row` tells standard prompt/completion (strings) from TRL's conversational form (lists of
    messages). Raises `ValueError` when the columns match no layout.
    """
    cols = set(columns)
    if "messages" in cols:
        return "messages"
    if {"chosen", "rejected"} <= cols:
        return "preference"
    if "label" in cols and "prompt" in cols:
        return "unpaired_preference"
    if "output" in cols and "instruction" in cols:
        return "alpaca"
    if "prompt" in cols and ("completion" in cols or {"rationale", "answer"} <= cols):
        if row is not None and isinstance(row.get("prompt"), list):
            return "conversational"
        return "seed" if "instruction" in cols or "rationale" in cols else "prompt_completion"
    if "text" in cols:
        return "text"
    raise ValueError(_no_schema_message(cols))


def _no_schema_message(cols: set[str]) -> str:
    shown = ", ".join(sorted(cols)) or "none"
    return (f"columns ({shown}) match no known layout; expected prompt/completion "
            "(+instruction), messages, text, instruction/input/output, prompt/chosen/rejected "
            "or prompt/completion/label — or map yours with --map theirs=prompt,…")


def same_family(a: str, b: str) -> bool:
    return _FAMILY.get(a, a) == _FAMILY.get(b, b)


def apply_mapping(row: dict, mapping: dict[str, str] | None) -> dict:
    """Rename source columns to ours (`{"question": "prompt"}`); unmapped columns stay."""
    if not mapping:
        return row
    return {mapping.get(k, k): v for k, v in row.items()}


def parse_mapping(text: str | None) -> dict[str, str]:
    """`"question=prompt,answer=completion"` → `{"question": "prompt", "answer": "completion"}`."""
    from engine.errors import TunedeckError

    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        source, sep, target = part.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise TunedeckError(f"--map: '{part}' is not theirs=ours; write e.g. "
                                "--map question=prompt,answer=completion")
        if target.strip() not in KNOWN_COLUMNS:
            raise TunedeckError(f"--map: '{target.strip()}' is not a column tunedeck knows; use "
                                f"one of {', '.join(sorted(KNOWN_COLUMNS))}")
        mapping[source.strip()] = target.strip()
    return mapping


# ----------------------------------------------------------------------------- row checks
# A problem is (code, field, message, fix); the validator adds file and line.
Problem = tuple[str, "str | None", str, str]


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _check_text(row: dict, name: str, required: bool, out: list[Problem]) -> None:
    if name not in row:
        if required:
            out.append(("missing_field", name, f"required field '{name}' is missing",
                        f"add \"{name}\": \"…\" to the row, or map your column with "
                        f"--map yours={name}"))
        return
    value = row[name]
    if value is None and not required:
        return
    if not isinstance(value, str):
        out.append(("wrong_type", name, f"'{name}' is {_type_name(value)}, expected text",
                    f"make '{name}' a JSON string (quote it)"))
    elif required and not value.strip():
        out.append(("empty_field", name, f"required field '{name}' is empty",
                    f"fill in '{name}' or remove the row"))


def _check_messages(row: dict, name: str, out: list[Problem]) -> None:
    value = row.get(name)
    if name not in row:
        out.append(("missing_field", name, f"required field '{name}' is missing",
                    f"add \"{name}\": [{{\"role\": \"user\", \"content\": \"…\"}}, …]"))
        return
    if not isinstance(value, list):
        out.append(("wrong_type", name, f"'{name}' is {_type_name(value)}, expected a list of "
                    "messages", f"make '{name}' a list of {{\"role\", \"content\"}} objects"))
        return
    if not value:
        out.append(("empty_field", name, f"'{name}' has no messages",
                    "add at least one user and one assistant message"))
        return
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) \
                or not isinstance(msg.get("content"), str):
            out.append(("wrong_type", f"{name}[{i}]", f"message {i} is not a "
                        "{\"role\": text, \"content\": text} object",
                        "give every message a string role and a string content"))
            return


ROLES = ("system", "user", "assistant")


def _check_roles(messages: list[dict], name: str, out: list[Problem],
                 where: Callable[[int], str] | None = None) -> None:
    for i, msg in enumerate(messages):
        if msg["role"] not in ROLES:
            out.append(("unknown_role", where(i) if where else f"{name}[{i}]",
                        f"message {i} has role '{msg['role']}'; only system, user and assistant "
                        "are understood", "rename the role to system, user or assistant (tool "
                        "turns and other roles are not supported)"))
            return


def _check_turns(messages: list[dict], name: str, out: list[Problem],
                 split: tuple[str, int] | None = None) -> None:
    """Roles known, and in the order chat training expects: an optional system message, then
    user and assistant alternating, ending with the assistant's answer (what is learnt).
    `split`: (the second field, where it starts) when the turns come from two fields."""

    def where(i: int) -> str:
        if split is not None and i >= split[1]:
            return f"{split[0]}[{i - split[1]}]"
        return f"{name}[{i}]"

    _check_roles(messages, name, out, where)
    if out:
        return
    if not any(m["role"] == "user" for m in messages):
        out.append(("missing_field", name, "no message has role 'user'",
                    "add a {\"role\": \"user\", …} message"))
        return
    start = 1 if messages[0]["role"] == "system" else 0
    for i in range(start, len(messages)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        role = messages[i]["role"]
        if role != expected:
            out.append(("turn_order", where(i), f"message {i} is '{role}' where '{expected}' "
                        "belongs: turns go (system,) user, assistant, user, assistant, …",
                        "reorder or merge the messages so user and assistant alternate, with "
                        "at most one system message, first"))
            return
    if messages[-1]["role"] != "assistant":
        out.append(("turn_order", where(len(messages) - 1), "the conversation ends with a user "
                    "turn: there is no answer to learn", "add the assistant's answer as the last "
                    "message"))


_SEED_OPTIONAL = ("instruction", "system", "rationale", "answer")


def _plain_seed_row(row: dict) -> bool:
    """The common case, checked fast: non-empty text prompt and completion, text extras."""
    p, c = row.get("prompt"), row.get("completion")
    if type(p) is not str or type(c) is not str or not p.strip() or not c.strip():
        return False
    return all(type(row.get(k, "")) is str for k in _SEED_OPTIONAL)


def check_row(row: dict, schema: str) -> list[Problem]:
    """The problems that make this row unusable under `schema` (empty list: usable)."""
    if schema in ("seed", "prompt_completion") and _plain_seed_row(row):
        return []
    out: list[Problem] = []
    if schema in ("seed", "prompt_completion"):
        _check_text(row, "prompt", True, out)
        if "completion" in row or not {"rationale", "answer"} <= set(row):
            _check_text(row, "completion", True, out)
        for name in ("instruction", "system", "rationale", "answer"):
            _check_text(row, name, False, out)
    elif schema == "conversational":
        _check_messages(row, "prompt", out)
        _check_messages(row, "completion", out)
        if not out:
            _check_turns(row["prompt"] + row["completion"], "prompt", out,
                         split=("completion", len(row["prompt"])))
    elif schema == "messages":
        _check_messages(row, "messages", out)
        if not out:
            _check_turns(row["messages"], "messages", out)
    elif schema == "text":
        _check_text(row, "text", True, out)
    elif schema == "alpaca":
        _check_text(row, "instruction", True, out)
        _check_text(row, "output", True, out)
        _check_text(row, "input", False, out)
        _check_text(row, "system", False, out)
    elif schema == "preference":
        for name in ("prompt", "chosen", "rejected"):
            value = row.get(name)
            if isinstance(value, list):
                _check_messages(row, name, out)
                if not out:
                    _check_roles(value, name, out)
            else:
                _check_text(row, name, True, out)
        if not out and _as_text(row["chosen"]).strip() == _as_text(row["rejected"]).strip():
            out.append(("same_answers", "rejected", "'chosen' and 'rejected' are the same "
                        "answer, so the pair prefers nothing",
                        "make 'rejected' the worse answer, or remove the row"))
    elif schema == "unpaired_preference":
        _check_text(row, "prompt", True, out)
        _check_text(row, "completion", True, out)
        if "label" not in row:
            out.append(("missing_field", "label", "required field 'label' is missing",
                        "add \"label\": true (desirable) or false (undesirable)"))
        elif not isinstance(row["label"], bool):
            out.append(("wrong_type", "label", f"'label' is {_type_name(row['label'])}, "
                        "expected true or false", "write the label as true or false"))
    return out


def _content(messages: list[dict], role: str, last: bool = True) -> str:
    picked = [m.get("content", "") for m in messages if m.get("role") == role]
    if not picked:
        return ""
    return picked[-1] if last else picked[0]


def _as_text(value: Any) -> str:
    if isinstance(value, list):  # a conversational preference answer
        return _content(value, "assistant") or (value[-1].get("content", "") if value else "")
    return "" if value is None else str(value)


_SEED_COLUMNS = {"prompt", "completion", "instruction", "system", "rationale", "answer"}


def normalize(row: dict, schema: str, line: int = 0) -> Example:
    """Turn a checked row into an `Example` (call `check_row` first)."""
    if schema in ("seed", "prompt_completion") and "completion" in row:
        get = row.get
        return Example(prompt=row["prompt"], completion=row["completion"],
                       instruction=get("instruction") or "", system=get("system") or "",
                       rationale=get("rationale") or "", answer=get("answer") or "", line=line,
                       extra={k: v for k, v in row.items() if k not in _SEED_COLUMNS})
    used: set[str] = set()

    def take(name: str) -> Any:
        used.add(name)
        return row.get(name)

    if schema in ("seed", "prompt_completion", "unpaired_preference", "text", "alpaca"):
        if schema == "text":
            ex = Example(prompt="", completion=_as_text(take("text")))
        elif schema == "alpaca":
            ex = Example(prompt=_as_text(take("input")), completion=_as_text(take("output")),
                         instruction=_as_text(take("instruction")))
        else:
            ex = Example(prompt=_as_text(take("prompt")), completion=_as_text(take("completion")),
                         instruction=_as_text(take("instruction")))
        ex.rationale = _as_text(take("rationale"))
        ex.answer = _as_text(take("answer"))
        if not ex.completion and ex.rationale and ex.answer:
            ex.completion = f"{ex.rationale}\nAnswer: {ex.answer}"
        if schema == "unpaired_preference":
            ex.label = bool(take("label"))
    elif schema == "conversational":
        prompt, completion = take("prompt"), take("completion")
        ex = Example(prompt=_content(prompt, "user"), completion=_as_text(completion),
                     messages=list(prompt) + list(completion))
        ex.system = _content(prompt, "system", last=False)
    elif schema == "messages":
        messages = take("messages")
        ex = Example(prompt=_content(messages, "user"), messages=list(messages),
                     system=_content(messages, "system", last=False))
        if messages and messages[-1].get("role") == "assistant":
            ex.completion = messages[-1].get("content", "")
    elif schema == "preference":
        prompt = take("prompt")
        if isinstance(prompt, list):
            ex = Example(prompt=_content(prompt, "user"), messages=list(prompt),
                         system=_content(prompt, "system", last=False))
        else:
            ex = Example(prompt=_as_text(prompt))
        ex.chosen = _as_text(take("chosen"))
        ex.rejected = _as_text(take("rejected"))
    else:  # pragma: no cover - detect_schema names only the schemas above
        raise ValueError(f"unknown schema {schema!r}")
    if "system" in row and not ex.system:
        ex.system = _as_text(take("system"))
    used.add("system")
    ex.line = line
    ex.extra = {k: v for k, v in row.items() if k not in used}
    return ex

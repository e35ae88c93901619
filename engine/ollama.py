"""An Ollama ``Modelfile`` for an exported GGUF: FROM, a TEMPLATE in Go template syntax, a
PARAMETER stop per end token, and the SYSTEM prompt the chat template adds on its own.

A Jinja chat template cannot be translated to Go in general, so the shape of a conversation is
read off the template by rendering it with marker strings: what each role's content is wrapped
in, what the generation prompt is, and the system text a template writes when the conversation
has none. The Go template is then built from those pieces. `ChatShape.render` applies the same
pieces in Python, so a test can hold the translation against the original template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.errors import TunedeckError

_MARK = {"system": "\x01SYSTEM\x01", "user": "\x01USER\x01", "assistant": "\x01ASSISTANT\x01"}
_USER2 = "\x01USER2\x01"


@dataclass
class ChatShape:
    """What a chat template wraps each role's content in (prefix, suffix), the text before the
    first message (``start``: a BOS the template writes) and the text that opens the assistant's
    turn (``generation``)."""

    system: tuple[str, str]
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str
    start: str = ""
    default_system: str | None = None  # written by the template when no system message is given

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as the Modelfile's TEMPLATE renders it (Ollama puts the SYSTEM line
        first when the conversation has no system message)."""
        out = [self.start]
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        for i, message in enumerate(messages):
            prefix, suffix = getattr(self, message["role"])
            last = i == len(messages) - 1
            # A last assistant message is a reply to continue: Ollama leaves it open.
            out.append(prefix + message["content"]
                       + ("" if last and message["role"] == "assistant" else suffix))
        if add_generation_prompt and messages and messages[-1]["role"] != "assistant":
            out.append(self.generation)
        return "".join(out)


def _render(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation)


def _between(text: str, left: str, right: str) -> str:
    start = text.index(left) + len(left)
    return text[start:text.index(right, start)]


def _split_turn(gap: str, ends: list[str]) -> tuple[str, str]:
    """Cut the text between two messages into the first one's suffix and the next one's prefix:
    the suffix runs to the end-of-turn token and the newlines after it."""
    found = [(gap.find(e), e) for e in ends if e and e in gap]
    if not found:
        return "", gap
    at, end = min(found)
    cut = at + len(end)
    while cut < len(gap) and gap[cut] == "\n":
        cut += 1
    return gap[:cut], gap[cut:]


def chat_shape(tokenizer: Any, ends: list[str]) -> ChatShape:
    """Read a chat template's pieces off renders with marker contents (see the module doc).
    ``ends``: the end-of-turn token texts (``<|im_end|>``, ``<|eot_id|>``…)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunedeckError("The model has no chat template, so there is no conversation format "
                            "to translate for Ollama. Add a chat_template to its tokenizer_config"
                            ".json, or write the Modelfile's TEMPLATE by hand.")
    s, u, a = _MARK["system"], _MARK["user"], _MARK["assistant"]
    try:
        full = _render(tokenizer, [{"role": "system", "content": s}, {"role": "user", "content": u},
                                   {"role": "assistant", "content": a},
                                   {"role": "user", "content": _USER2}], generation=True)
        plain = _render(tokenizer, [{"role": "user", "content": u}], generation=False)
    except Exception as err:  # a template may raise anything (jinja errors, its own raise_exception)
        raise TunedeckError(f"The chat template could not be rendered for the Modelfile: "
                            f"{type(err).__name__}: {err}") from None
    if any(mark not in full for mark in (s, u, a, _USER2)) or u not in plain:
        raise TunedeckError("The chat template drops a system, user or assistant message, so "
                            "its format cannot be translated for Ollama; write the Modelfile's "
                            "TEMPLATE by hand.")
    system_suffix, user_prefix = _split_turn(_between(full, s, u), ends)
    assistant_suffix, _ = _split_turn(_between(full, a, _USER2), ends)
    user_suffix, assistant_prefix = _split_turn(_between(full, u, a), ends)
    tail = full[full.index(_USER2) + len(_USER2):]  # user suffix + generation prompt
    generation = tail[len(user_suffix):] if tail.startswith(user_suffix) else tail
    head = full[:full.index(s)]
    # What comes before the first message: a BOS the template writes, or a system turn of its
    # own when the conversation has none (SmolLM's "You are a helpful AI assistant…").
    before = plain[:plain.index(u)]
    if not before.endswith(user_prefix):
        raise TunedeckError("The chat template writes a first user message differently from a "
                            "later one; write the Modelfile's TEMPLATE by hand.")
    before = before[:len(before) - len(user_prefix)]
    start = ""
    default_system = None
    if head and before.startswith(head) and before.endswith(system_suffix) and len(before) > len(
            head) + len(system_suffix):
        default_system = before[len(head):len(before) - len(system_suffix)]
        start = ""
    else:
        start = before
    if start and head.startswith(start):
        head = head[len(start):]
    return ChatShape(system=(head, system_suffix), user=(user_prefix, user_suffix),
                     assistant=(assistant_prefix, assistant_suffix), generation=generation,
                     start=start, default_system=default_system)


def _go_text(text: str) -> str:
    """Literal text inside a Go template: only ``{{`` needs escaping."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(shape: ChatShape, *, strip: str = "") -> str:
    """The Ollama TEMPLATE for `shape`. ``strip``: a leading BOS text the runtime adds itself."""
    sp, ss = (_go_text(p) for p in shape.system)
    up, us = (_go_text(p) for p in shape.user)
    ap, as_ = (_go_text(p) for p in shape.assistant)
    start = shape.start[len(strip):] if strip and shape.start.startswith(strip) else shape.start
    gen = _go_text(shape.generation)
    # One line, no {{- / -}}: trimming markers would also eat the newlines the pieces hold.
    return (
        f"{_go_text(start)}{{{{ range $i, $_ := .Messages }}}}"
        "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        f'{{{{ if eq .Role "system" }}}}{sp}{{{{ .Content }}}}{ss}'
        f'{{{{ else if eq .Role "user" }}}}{up}{{{{ .Content }}}}{us}'
        f"{{{{ if $last }}}}{gen}{{{{ end }}}}"
        f'{{{{ else if eq .Role "assistant" }}}}{ap}{{{{ .Content }}}}'
        f"{{{{ if not $last }}}}{as_}{{{{ end }}}}"
        "{{ end }}{{ end }}")


def _quoted(text: str) -> str:
    """A Modelfile string: triple quotes unless the text itself holds them."""
    if '"""' not in text:
        return f'"""{text}"""'
    return json.dumps(text)


def modelfile(gguf_name: str, tokenizer: Any, stops: list[str], *, bos_added: bool) -> str:
    """The Modelfile text for the GGUF file `gguf_name` lying beside it."""
    shape = chat_shape(tokenizer, stops)
    bos = tokenizer.bos_token if bos_added and tokenizer.bos_token else ""
    lines = [f"FROM ./{gguf_name}", "", f"TEMPLATE {_quoted(go_template(shape, strip=bos))}", ""]
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    if shape.default_system:
        lines += ["", f"SYSTEM {_quoted(shape.default_system)}"]
    return "\n".join(lines) + "\n"

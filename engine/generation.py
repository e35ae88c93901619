"""Streaming generation with cancel, stop strings and prefix KV-cache reuse.

The decode loop is our own (not ``model.generate``) for three reasons: cancel is checked before
every forward pass, so it takes effect within one token; text is streamed at token granularity
with stop strings held back until they are ruled out; and the prefill is split at the reusable
prefix, so a cold call and a call that reuses the cached prefix run exactly the same tensor
shapes and give bit-identical greedy output. Sampling itself is transformers' logits processors.
``bench/prefix_cache.py`` measures this loop against raw ``model.generate``.

Heavy libraries are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import TunedeckError

STOP_REASONS = ("eos", "stop", "length", "cancelled")


@dataclass
class GenerationParams:
    temperature: float = 0.0  # 0 → greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 → off
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Raise a TunedeckError naming the field and the fix for an out-of-range value."""
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature must be ≥ 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be ≥ 0 (0 = off), got {self.top_k}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0 (1 = off), "
                            f"got {self.repetition_penalty}")
        if any(not s for s in self.stop):
            problems.append("stop strings must not be empty")
        if problems:
            raise TunedeckError("Generation parameters: " + "; ".join(problems) + ".")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float  # call start → first new token sampled (prefill + one step)
    tokens_per_s: float  # decode rate after the first token (the whole rate for one token)
    total_s: float
    stop_reason: str  # "eos" | "stop" | "length" | "cancelled"
    reused_prefix_tokens: int = 0

    def metrics(self) -> dict[str, Any]:
        """The numbers the store records with a try."""
        return {
            "ttft_s": self.ttft_s,
            "tokens_per_s": self.tokens_per_s,
            "total_s": self.total_s,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "stop_reason": self.stop_reason,
            "reused_prefix_tokens": self.reused_prefix_tokens,
        }


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a turn: the tokenizer's EOS and the model's generation config EOS."""
    ids: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None),
                  getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two id sequences share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could still become the start of a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:k]):
                hold = k
                break
    return hold


class _TextStream:
    """Turns the growing list of generated ids into text deltas, minding stop strings.

    The whole completion is re-decoded each step (cheap for a fast tokenizer at these lengths)
    because byte-level BPE tokens can split a character; an unfinished character is held back.
    """

    def __init__(self, tokenizer: Any, stops: list[str], on_text: Callable[[str], None] | None):
        self.tokenizer = tokenizer
        self.stops = stops
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> bool:
        """Add a token; return True when a stop string has appeared (text is cut before it)."""
        self.ids.append(token_id)
        previous = len(self.text)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if self.stops:
            longest = max(len(s) for s in self.stops)
            start = max(0, min(previous, len(self.text)) - longest)
            cuts = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if cuts:
                self.text = self.text[: min(cuts)]
                self.stopped = True
                self._emit(len(self.text))
                return True
        end = len(self.text)
        if self.text.endswith("\ufffd"):
            end -= 1
        end -= _held_back(self.text[:end], self.stops)
        self._emit(end)
        return False

    def finish(self) -> None:
        self._emit(len(self.text))

    def _emit(self, end: int) -> None:
        if end > self.emitted:
            delta = self.text[self.emitted:end]
            self.emitted = end
            if self.on_text is not None:
                self.on_text(delta)


class Generator:
    """Generates from one loaded model; one generation at a time (a lock inside).

    Keeps the KV cache of the last prompt's reusable prefix (``prefix_len``: the system message
    and few-shot examples). A later call whose input starts with the same tokens prefills only
    what follows them.
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._eos = eos_token_ids(model, tokenizer)
        self._prefix_ids: tuple[int, ...] = ()
        self._prefix_cache: Any = None

    @property
    def cached_prefix_tokens(self) -> int:
        return len(self._prefix_ids)

    def clear_cache(self) -> None:
        """Forget the cached prefix (e.g. after the model's weights or adapter changed)."""
        with self._lock:
            self._drop_cache()

    def _drop_cache(self) -> None:
        self._prefix_ids = ()
        self._prefix_cache = None

    def generate(
        self,
        input_ids: list[int],
        params: GenerationParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        prefix_len: int = 0,
    ) -> GenerationResult:
        params.validate()
        if not input_ids:
            raise TunedeckError("Nothing to generate from: the prompt is empty.")
        with self._lock:
            try:
                return self._generate(list(input_ids), params, on_text, cancel, prefix_len)
            except BaseException:
                # The cache may hold a half-finished step: never reuse it.
                self._drop_cache()
                raise

    # ------------------------------------------------------------------ internals
    def _start_cache(self, input_ids: list[int], prefix_len: int) -> tuple[Any, int]:
        """A cache holding the longest reusable prefix of `input_ids`, and its length."""
        from transformers import DynamicCache

        # At least one prompt token must be prefilled to get the next-token logits.
        common = common_prefix(self._prefix_ids, input_ids[:-1])
        if prefix_len > 0:
            # Reusing exactly the hinted prefix keeps the computation identical to a cold call.
            common = min(common, prefix_len)
        cache = self._prefix_cache
        if cache is None or common == 0 or not getattr(cache, "is_croppable", False):
            self._drop_cache()
            return DynamicCache(config=self.model.config), 0
        # The cached cache is handed over (not copied): this call crops it back when it is done.
        self._prefix_cache = None
        self._prefix_ids = ()
        _crop_to(cache, common)
        return cache, common

    def _forward(self, ids: list[int] | Any, cache: Any) -> Any:
        import torch

        if not isinstance(ids, torch.Tensor):
            ids = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def _generate(self, input_ids, params, on_text, cancel, prefix_len) -> GenerationResult:
        import torch

        started = time.perf_counter()
        prompt_tokens = len(input_ids)
        prefix_len = max(0, min(prefix_len, prompt_tokens - 1))
        stream = _TextStream(self.tokenizer, list(params.stop), on_text)
        processors = _logits_processors(params)
        rng = None
        if params.seed is not None and not params.greedy:
            rng = torch.Generator(device=self.model.device).manual_seed(params.seed)

        def result(reason: str, reused: int, first_at: float | None) -> GenerationResult:
            stream.finish()
            done = time.perf_counter()
            n = len(stream.ids)
            ttft = (first_at - started) if first_at is not None else done - started
            if n > 1 and first_at is not None and done > first_at:
                rate = (n - 1) / (done - first_at)
            else:
                rate = n / (done - started) if done > started else 0.0
            return GenerationResult(
                text=stream.text, prompt_tokens=prompt_tokens, completion_tokens=n,
                ttft_s=ttft, tokens_per_s=rate, total_s=done - started, stop_reason=reason,
                reused_prefix_tokens=reused)

        if cancel is not None and cancel.is_set():
            return result("cancelled", 0, None)

        with torch.inference_mode():
            cache, reused = self._start_cache(input_ids, prefix_len)
            # Prefill in two pieces split at the reusable prefix, so that the prefix's keys and
            # values come out of the same computation whether they were cached or not.
            if reused < prefix_len:
                self._forward(input_ids[reused:prefix_len], cache)
                reused_for_split = prefix_len
            else:
                reused_for_split = reused
            if cancel is not None and cancel.is_set():
                self._keep_prefix(cache, input_ids, prefix_len)
                return result("cancelled", reused, None)
            logits = self._forward(input_ids[reused_for_split:], cache)

            # The full id history is only needed by the repetition penalty.
            history = None
            if params.repetition_penalty != 1.0:
                history = torch.tensor([input_ids], dtype=torch.long, device=self.model.device)
            first_at: float | None = None
            while True:
                next_token = _choose(logits, history, processors, params, rng)
                token = int(next_token)
                if first_at is None:
                    first_at = time.perf_counter()
                if token in self._eos:
                    reason = "eos"
                    break
                if history is not None:
                    history = torch.cat([history, next_token.view(1, 1)], dim=1)
                if stream.push(token):
                    reason = "stop"
                    break
                if len(stream.ids) >= params.max_new_tokens:
                    reason = "length"
                    break
                # Checked before every forward pass: a cancel costs at most the token in flight.
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
                logits = self._forward(next_token.view(1, 1), cache)
            self._keep_prefix(cache, input_ids, prefix_len)
        return result(reason, reused, first_at)

    def _keep_prefix(self, cache: Any, input_ids: list[int], prefix_len: int) -> None:
        """Crop the cache back to the reusable prefix and keep it for the next call."""
        if prefix_len <= 0 or not getattr(cache, "is_croppable", False):
            self._drop_cache()
            return
        _crop_to(cache, prefix_len)
        self._prefix_cache = cache
        self._prefix_ids = tuple(input_ids[:prefix_len])


def _crop_to(cache: Any, length: int) -> None:
    # transformers 5 `crop` takes the (negative) number of tokens to remove.
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _logits_processors(params: GenerationParams) -> list[Any]:
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors: list[Any] = []
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if not params.greedy:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    return processors


def _choose(logits: Any, all_ids: Any, processors: list[Any], params: GenerationParams,
            rng: Any) -> Any:
    import torch

    scores = logits.float()
    for processor in processors:
        scores = processor(all_ids, scores)
    if params.greedy:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=rng).view(-1)

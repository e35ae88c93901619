"""Running a prompting strategy on a built prompt: one generation, or self-consistency's samples
and their vote.

The generation loop the Playground and `tunedeck prompt` share (the evaluator batches its own
samples and votes with `engine.strategies.vote`). Zero-shot, few-shot and chain-of-thought
generate once; chain-of-thought kinds also read the answer line. Self-consistency draws
`strategy.samples` completions, each with its own seed (`sample_params`), and votes through
`engine.strategies.self_consistency`; a cancel ends the drawing after the sample in flight.

Callbacks say what happens as it happens, from the thread that generates: `on_start(i)` before
sample i, `on_text(i, delta)` for each piece of text, `on_end(i, result)` after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.generation import GenerationParams, GenerationResult
from engine.strategies import BuiltPrompt, StrategyConfig, Vote, extract_answer, self_consistency

SAMPLING_TEMPERATURE = 0.7  # self-consistency needs different samples: greedy would repeat one


@dataclass
class StrategyRun:
    """What one strategy produced: every generation, the answers read off them, the vote."""

    samples: int  # planned: strategy.samples for self-consistency, else 1
    results: list[GenerationResult] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)  # chain-of-thought kinds only
    vote: Vote | None = None  # self-consistency only

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.results]

    @property
    def answer(self) -> str | None:
        """The voted answer (self-consistency), else the one answer line (chain-of-thought)."""
        if self.vote is not None:
            return self.vote.answer
        return self.answers[0] if self.answers else None

    @property
    def cancelled(self) -> bool:
        return bool(self.results) and self.results[-1].stop_reason == "cancelled"

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.results)

    @property
    def total_s(self) -> float:
        return sum(r.total_s for r in self.results)


def sample_params(params: GenerationParams, index: int,
                  greedy_fallback: float | None = SAMPLING_TEMPERATURE) -> GenerationParams:
    """The i-th self-consistency sample's parameters: its own seed (seed + i, from 0 when none)
    and, when `params` are greedy, `greedy_fallback` as the temperature (None keeps greedy)."""
    temperature = params.temperature
    if not temperature and greedy_fallback is not None:
        temperature = greedy_fallback
    return replace(params, temperature=temperature, seed=(params.seed or 0) + index)


def run_strategy(generator: Any, built: BuiltPrompt, strategy: StrategyConfig,
                 params: GenerationParams, *,
                 on_text: Callable[[int, str], None] | None = None,
                 on_start: Callable[[int], None] | None = None,
                 on_end: Callable[[int, GenerationResult], None] | None = None,
                 cancel: threading.Event | None = None,
                 greedy_fallback: float | None = SAMPLING_TEMPERATURE) -> StrategyRun:
    """Generate with `generator` (an `engine.generation.Generator`, or one bound to an adapter)
    under `strategy`; see the module's docstring for the callbacks."""
    sampled = strategy.kind == "self-consistency"
    run = StrategyRun(samples=strategy.samples if sampled else 1)

    def generate(index: int, run_params: GenerationParams) -> GenerationResult:
        if on_start is not None:
            on_start(index)
        stream = None if on_text is None else (lambda delta: on_text(index, delta))
        result = generator.generate(built.input_ids, run_params, on_text=stream, cancel=cancel,
                                    prefix_len=built.prefix_len)
        run.results.append(result)
        if on_end is not None:
            on_end(index, result)
        return result

    if not sampled:
        result = generate(0, params)
        if strategy.chain_of_thought:
            run.answers = [extract_answer(result.text, strategy.answer_pattern)]
        return run

    def sample(index: int) -> str:
        # One sample is one plain run: its parameters stay as given.
        run_params = sample_params(params, index, greedy_fallback) if run.samples > 1 else params
        return generate(index, run_params).text

    run.vote = self_consistency(sample, run.samples, strategy.answer_pattern,
                                stop=lambda: run.cancelled)
    run.answers = list(run.vote.answers)
    return run

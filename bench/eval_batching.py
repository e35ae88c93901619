"""Evaluation throughput: batched left-padded greedy generation (what `engine.evaluation` runs)
against one prompt at a time, on the same text-to-SQL test prompts and the same number of new
tokens (every sequence runs to `--tokens`, so both sides do the same work).

The two sides alternate (batched, sequential, batched, …) in one process and the medians are
compared, so a busy machine slows both alike. Prints examples/s for each and the speed-up.

    .venv/bin/python bench/eval_batching.py [--model REF] [--n 8] [--tokens 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=8, help="prompts (one batch)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from engine import models
    from engine.data import load_examples, sample_path
    from engine.evaluation.batched import generate_batch
    from engine.strategies import StrategyConfig, build_prompt, example_values
    from engine.templates import get_template

    loaded = models.load(args.model)
    model, tok = loaded.model, loaded.tokenizer
    # Every sequence runs to the full length: no early EOS, so both sides do equal work.
    model.generation_config.min_new_tokens = args.tokens
    template = get_template("text-to-sql")
    examples = load_examples(sample_path("text_to_sql", "test"), limit=args.n)
    prompts = [build_prompt(template, example_values(e), tok, StrategyConfig(),
                            max_new_tokens=args.tokens).input_ids for e in examples]
    print(f"{loaded.info.name}: {len(prompts)} prompts of {min(map(len, prompts))}–"
          f"{max(map(len, prompts))} tokens, {args.tokens} new tokens each")

    def batched() -> float:
        start = time.perf_counter()
        generate_batch(model, tok, prompts, args.tokens)
        return time.perf_counter() - start

    def sequential() -> float:
        start = time.perf_counter()
        for p in prompts:
            generate_batch(model, tok, [p], args.tokens)
        return time.perf_counter() - start

    batched()  # warm-up
    times: dict[str, list[float]] = {"batched": [], "sequential": []}
    for _ in range(args.repeat):
        times["batched"].append(batched())
        times["sequential"].append(sequential())
    b, s = statistics.median(times["batched"]), statistics.median(times["sequential"])
    print(f"batched (left padding, batch {len(prompts)}): {b:.2f} s  "
          f"{len(prompts) / b:.2f} examples/s")
    print(f"one at a time:                   {s:.2f} s  {len(prompts) / s:.2f} examples/s")
    print(f"speed-up: {s / b:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())

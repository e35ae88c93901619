"""A/B generation: two completions of one prompt, stored in random order as one pair."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import TunedeckError
from engine.ratings.schema import Completion, Pair

if TYPE_CHECKING:
    from engine.ratings.store import RatingStore


# --------------------------------------------------------------------------- A/B generation


def _has_adapter(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and bool(getattr(model, "peft_config", None))


def ab_kind(loaded: Any) -> str:
    """What an A/B pair compares for this model: base vs adapter when one is active."""
    return "adapter" if _has_adapter(loaded.model) else "temperature"


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]] | None, prompt_text: str) -> list[int]:
    """Token ids for a prompt; the chat template owns the special tokens when there are messages."""
    if messages is not None and getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=True)
        return list(out["input_ids"])
    return list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])


def generate_ab(store: RatingStore, loaded: Any, source: Completion, kind: str | None = None,
                max_new_tokens: int = 128, temperatures: tuple[float, float] = (0.0, 1.0),
                seed: int | None = None, rng: Any = None, adapter: str | None = None) -> Pair:
    """Two completions of `source`'s prompt — two temperatures, or the base model vs the active
    adapter — stored in random order as one A/B pair. Runs the model: call from a worker."""
    import random

    from engine.generation import GenerationParams, Generator

    kind = kind or ab_kind(loaded)
    if kind not in ("temperature", "adapter"):
        raise TunedeckError(f"A/B kind {kind!r}: choose temperature or adapter.")
    if kind == "adapter" and not _has_adapter(loaded.model):
        raise TunedeckError("Base vs adapter needs an active adapter: choose one for the model "
                            "first, or compare two temperatures.")
    ids = prompt_ids(loaded.tokenizer, source.messages, source.prompt_text)
    generator = Generator(loaded.model, loaded.tokenizer)
    rng = rng or random.Random()
    sides = []
    for label in ("base", "adapter") if kind == "adapter" else temperatures:
        temperature = 0.0 if kind == "adapter" else float(label)
        params = GenerationParams(temperature=temperature, max_new_tokens=max_new_tokens,
                                  seed=None if temperature == 0 else (
                                      seed if seed is not None else rng.randrange(2**31)))
        # Each side starts from an empty prefix cache: base and adapter KV values differ.
        generator.clear_cache()
        if label == "base":
            with loaded.model.disable_adapter():
                result = generator.generate(ids, params)
        else:
            result = generator.generate(ids, params)
        variant = {"adapter": label} if kind == "adapter" else {"temperature": temperature}
        sides.append((variant, params, result))
    order = [0, 1]
    rng.shuffle(order)  # shown in random order; the variant stays hidden until rated
    model_name = getattr(getattr(loaded, "info", None), "name", "") or ""
    made = []
    for side in order:
        variant, params, result = sides[side]
        made.append(store.add_completion(
            source="ab", prompt=source.prompt, messages=source.messages,
            prompt_text=source.prompt_text, completion=result.text.strip(), model=model_name,
            adapter=(adapter or "active adapter") if variant.get("adapter") == "adapter" else None,
            run_id=source.run_id, template=source.template, strategy=source.strategy,
            params=params.as_dict(), extra={"variant": variant, "from": source.id}))
    pair = store.add_pair(made[0], made[1], info={
        "kind": kind, "a": sides[order[0]][0], "b": sides[order[1]][0], "from": source.id})
    return store.get_pair(pair)

"""A/B generation: two completions of one prompt, stored in random order with hidden origins."""

from __future__ import annotations

import random

import pytest

from engine.errors import TunedeckError
from engine.ratings import RatingStore, ab_kind, generate_ab, prompt_ids


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from engine import models

    return models.load(str(tiny_model_dir))


def greedy(loaded, ids, n=6):
    from engine.generation import GenerationParams, Generator

    return Generator(loaded.model, loaded.tokenizer).generate(
        ids, GenerationParams(max_new_tokens=n)).text.strip()


def test_two_temperatures_in_random_order(tiny):
    with RatingStore() as store:
        source = store.get_completion(store.add_completion(
            source="manual", prompt="Hi", messages=[{"role": "user", "content": "Hi"}],
            completion="Hello"))
        assert ab_kind(tiny) == "temperature"
        orders = set()
        for seed in range(6):
            pair = generate_ab(store, tiny, source, max_new_tokens=6, rng=random.Random(seed))
            assert pair.info["kind"] == "temperature" and pair.choice is None
            # Each side's stored parameters match the variant recorded for it.
            for side, c in (("a", pair.a), ("b", pair.b)):
                assert c.params["temperature"] == pair.info[side]["temperature"]
                assert c.messages == source.messages and c.extra["from"] == source.id
            orders.add(pair.info["a"]["temperature"])
            greedy_side = pair.a if pair.a.params["temperature"] == 0 else pair.b
            ids = prompt_ids(tiny.tokenizer, source.messages, source.prompt_text)
            assert greedy_side.completion == greedy(tiny, ids)
        assert orders == {0.0, 1.0}  # both orders happen
        assert store.progress("ab") == (0, 6)


def test_base_versus_adapter(tiny, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from engine import models

    base = models.load(str(tiny_model_dir))
    ids = prompt_ids(base.tokenizer, [{"role": "user", "content": "Hi"}], "")
    plain = greedy(base, ids)
    with RatingStore() as store:
        source = store.get_completion(store.add_completion(
            source="manual", prompt="Hi", messages=[{"role": "user", "content": "Hi"}],
            completion="Hello"))
        with pytest.raises(TunedeckError, match="needs an active adapter"):
            generate_ab(store, base, source, kind="adapter")
        import torch

        torch.manual_seed(1)
        base.model = get_peft_model(base.model, LoraConfig(
            r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
        tuned = greedy(base, ids)
        assert tuned != plain  # the adapter changes the answer, so the check below means something
        assert ab_kind(base) == "adapter"
        pair = generate_ab(store, base, source, max_new_tokens=6, adapter="run-7")
    by_variant = {pair.info[s]["adapter"]: c for s, c in (("a", pair.a), ("b", pair.b))}
    assert by_variant["base"].completion == plain
    assert by_variant["adapter"].completion == tuned
    assert by_variant["adapter"].adapter == "run-7" and by_variant["base"].adapter is None

"""engine.generation: streaming, cancel, stop strings, sampling parameters and prefix reuse."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from engine.errors import TunedeckError
from engine.generation import GenerationParams, Generator, _held_back, _TextStream


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


FEW_SHOT_SYSTEM = (
    "You answer geography questions with one short sentence.\n"
    + "".join(
        f"Question: What is the capital of {country}?\nAnswer: The capital of {country} is "
        f"{city}.\n\n"
        for country, city in [("Germany", "Berlin"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
                              ("Canada", "Ottawa"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
                              ("Norway", "Oslo"), ("Chile", "Santiago")]
    )
)


def few_shot(tokenizer, question: str) -> list[int]:
    return chat_ids(tokenizer, [{"role": "system", "content": FEW_SHOT_SYSTEM}, *user(question)])


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_model_dir))


# ---------------------------------------------------------------------------- the real model
def test_greedy_answer_streams_and_counts(default_model):
    gen = Generator(default_model.model, default_model.tokenizer)
    ids = chat_ids(default_model.tokenizer, user("What is the capital of France?"))
    deltas: list[str] = []
    result = gen.generate(ids, GenerationParams(), on_text=deltas.append)
    assert "Paris" in result.text
    assert result.stop_reason == "eos"
    assert "".join(deltas) == result.text
    assert len(deltas) > 3  # streamed token by token, not delivered at the end
    assert result.prompt_tokens == len(ids)
    expected = default_model.tokenizer(result.text, add_special_tokens=False)["input_ids"]
    assert result.completion_tokens == len(expected)
    assert 0 < result.ttft_s <= result.total_s
    assert result.tokens_per_s > 0


def test_cancel_mid_stream_takes_effect_within_one_token(default_model):
    gen = Generator(default_model.model, default_model.tokenizer)
    ids = chat_ids(default_model.tokenizer, user("Write a long story about a dragon."))
    cancel = threading.Event()
    deltas: list[str] = []

    def on_text(delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 3:
            cancel.set()

    result = gen.generate(ids, GenerationParams(max_new_tokens=200), on_text=on_text,
                          cancel=cancel)
    assert result.stop_reason == "cancelled"
    # Plain ASCII words: one delta per token, and no token after the one that saw the cancel.
    assert result.completion_tokens == 3
    assert result.text == "".join(deltas)


def test_cancel_from_another_thread(default_model):
    gen = Generator(default_model.model, default_model.tokenizer)
    ids = chat_ids(default_model.tokenizer, user("Write a long story about a dragon."))
    cancel = threading.Event()
    first = threading.Event()
    out: dict = {}

    def run() -> None:
        out["result"] = gen.generate(ids, GenerationParams(max_new_tokens=400),
                                     on_text=lambda _d: first.set(), cancel=cancel)

    worker = threading.Thread(target=run)
    worker.start()
    assert first.wait(60)
    cancel.set()
    worker.join(60)
    assert out["result"].stop_reason == "cancelled"
    assert out["result"].completion_tokens < 400


def test_cancel_before_start_generates_nothing(default_model):
    gen = Generator(default_model.model, default_model.tokenizer)
    cancel = threading.Event()
    cancel.set()
    result = gen.generate(chat_ids(default_model.tokenizer, user("Hi")), GenerationParams(),
                          cancel=cancel)
    assert (result.stop_reason, result.completion_tokens, result.text) == ("cancelled", 0, "")


def test_prefix_reuse_gives_the_same_greedy_output(default_model):
    tok = default_model.tokenizer
    first = few_shot(tok, "What is the capital of France?")
    retry = few_shot(tok, "What is the capital of Italy?")
    prefix = shared_prefix(first, retry)
    assert prefix > 150  # the system message and the few-shot examples
    params = GenerationParams(max_new_tokens=24)

    cold_no_hint = Generator(default_model.model, tok).generate(retry, params)
    cold = Generator(default_model.model, tok).generate(retry, params, prefix_len=prefix)

    warm_gen = Generator(default_model.model, tok)
    before = warm_gen.generate(first, params, prefix_len=prefix)
    assert before.reused_prefix_tokens == 0
    assert warm_gen.cached_prefix_tokens == prefix
    warm = warm_gen.generate(retry, params, prefix_len=prefix)
    assert warm.reused_prefix_tokens == prefix
    assert cold.reused_prefix_tokens == 0
    assert "Rome" in warm.text
    assert warm.text == cold.text == cold_no_hint.text
    assert warm.completion_tokens == cold.completion_tokens

    # Generating did not leave its own tokens in the cached prefix: the first prompt again
    # reuses the prefix and answers exactly as it did cold.
    again = warm_gen.generate(first, params, prefix_len=prefix)
    assert again.reused_prefix_tokens == prefix
    assert again.text == before.text


def test_different_prefix_is_not_reused(default_model):
    tok = default_model.tokenizer
    gen = Generator(default_model.model, tok)
    a = few_shot(tok, "What is the capital of France?")
    gen.generate(a, GenerationParams(max_new_tokens=4), prefix_len=len(a) - 8)
    other = chat_ids(tok, [{"role": "system", "content": "Be terse."},
                           *user("What is the capital of France?")])
    result = gen.generate(other, GenerationParams(max_new_tokens=4), prefix_len=5)
    # Only the chat template's opening tokens can match before the system text differs.
    assert result.reused_prefix_tokens == shared_prefix(a, other) < 5


def test_stop_string_cuts_the_text_and_is_never_streamed(default_model):
    gen = Generator(default_model.model, default_model.tokenizer)
    ids = chat_ids(default_model.tokenizer, user("What is the capital of France?"))
    deltas: list[str] = []
    result = gen.generate(ids, GenerationParams(stop=["Paris"]), on_text=deltas.append)
    assert result.stop_reason == "stop"
    assert result.text == "The capital of France is "
    assert "".join(deltas) == result.text


def test_length_limit(default_model):
    gen = Generator(default_model.model, default_model.tokenizer)
    ids = chat_ids(default_model.tokenizer, user("Write a long story about a dragon."))
    result = gen.generate(ids, GenerationParams(max_new_tokens=5))
    assert (result.stop_reason, result.completion_tokens) == ("length", 5)


# ---------------------------------------------------------------------------- mechanics (tiny)
def test_seeded_sampling_is_reproducible_and_seeds_differ(tiny):
    model, tok = tiny
    gen = Generator(model, tok)
    ids = chat_ids(tok, user("Hello there"))
    params = GenerationParams(temperature=1.0, top_p=0.95, top_k=100, max_new_tokens=12, seed=7,
                              repetition_penalty=1.3)
    a = gen.generate(ids, params)
    b = gen.generate(ids, params)
    c = gen.generate(ids, GenerationParams(**{**params.as_dict(), "seed": 8}))
    assert a.text == b.text
    assert a.text != c.text


def test_top_k_one_is_greedy(tiny):
    model, tok = tiny
    gen = Generator(model, tok)
    ids = chat_ids(tok, user("Hello there"))
    greedy = gen.generate(ids, GenerationParams(max_new_tokens=10))
    top1 = gen.generate(ids, GenerationParams(temperature=1.5, top_k=1, max_new_tokens=10,
                                              seed=1))
    assert greedy.text == top1.text


def test_matches_model_generate_greedy(tiny):
    import torch

    model, tok = tiny
    ids = chat_ids(tok, user("Tell me something"))
    ours = Generator(model, tok).generate(ids, GenerationParams(max_new_tokens=16))
    with torch.inference_mode():
        raw = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
    expected = tok.decode(raw[0, len(ids):], skip_special_tokens=True)
    assert ours.text == expected


def test_bad_parameters_raise_a_clear_error(tiny):
    model, tok = tiny
    gen = Generator(model, tok)
    with pytest.raises(TunedeckError, match="top_p"):
        gen.generate([1, 2, 3], GenerationParams(top_p=0))
    with pytest.raises(TunedeckError, match="max_new_tokens"):
        gen.generate([1, 2, 3], GenerationParams(max_new_tokens=0))
    with pytest.raises(TunedeckError, match="empty"):
        gen.generate([], GenerationParams())


def test_generator_is_serialised_across_threads(tiny):
    model, tok = tiny
    gen = Generator(model, tok)
    ids = chat_ids(tok, user("Hello"))
    expected = gen.generate(ids, GenerationParams(max_new_tokens=8), prefix_len=4).text
    results: list[str] = []

    def run() -> None:
        results.append(gen.generate(ids, GenerationParams(max_new_tokens=8), prefix_len=4).text)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [expected] * 3


class _PieceTokenizer:
    """Ids are indexes into a list of text pieces: makes the stream's text exact."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids)


def test_text_stream_holds_back_a_possible_stop_string():
    pieces = ["Answer", ": 4", "\n\n", "Quest", "ion:", " more"]
    deltas: list[str] = []
    stream = _TextStream(_PieceTokenizer(pieces), ["\n\nQuestion:"], deltas.append)
    assert not stream.push(0)
    assert not stream.push(1)
    assert not stream.push(2)  # "\n\n" might start the stop string: held back
    assert "".join(deltas) == "Answer: 4"
    assert not stream.push(3)
    assert "".join(deltas) == "Answer: 4"
    assert stream.push(4)
    assert stream.text == "Answer: 4"
    assert "".join(deltas) == "Answer: 4"


def test_text_stream_releases_held_text_that_was_not_a_stop():
    pieces = ["a", "\n\n", "b"]
    deltas: list[str] = []
    stream = _TextStream(_PieceTokenizer(pieces), ["\n\nQ"], deltas.append)
    stream.push(0)
    stream.push(1)
    assert "".join(deltas) == "a"
    stream.push(2)
    assert "".join(deltas) == "a\n\nb"


def test_held_back():
    assert _held_back("abc\n", ["\nX"]) == 1
    assert _held_back("abc", ["\nX"]) == 0
    assert _held_back("xxStO", ["StOP", "O"]) == 3


def test_import_is_light():
    code = "import engine.generation, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

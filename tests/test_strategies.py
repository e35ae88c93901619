"""Prompting strategies: chat/raw building, BOS, budget, example selection, CoT answers, votes."""

from __future__ import annotations

import pytest

from engine.data import Example, load_examples, sample_path
from engine.errors import TunedeckError
from engine.strategies import (
    StrategyConfig,
    build_prompt,
    extract_answer,
    majority_vote,
    select_examples,
    self_consistency,
    vote,
)
from engine.templates import PromptTemplate, get_template


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_dir))


@pytest.fixture(scope="module")
def bos_adding_tokenizer(default_model_dir):
    """A Llama-style tokenizer: adds BOS on encode, and its chat template writes BOS too."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(default_model_dir), add_bos_token=True)
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}")
    return tok


QA = PromptTemplate(name="qa", system="Answer with one word.", template="Q: {{ prompt }}\nA:")


def shots(n: int, words: int = 3) -> list[Example]:
    return [Example(prompt=f"question {i} " + " ".join(["word"] * words), completion=f"answer {i}",
                    line=i + 1) for i in range(n)]


def leading_bos(ids: list[int], bos: int) -> int:
    n = 0
    while n < len(ids) and ids[n] == bos:
        n += 1
    return n


# --------------------------------------------------------------------------- chat / raw, BOS


def test_chat_path_matches_the_chat_template_with_exactly_one_bos(tokenizer):
    built = build_prompt(QA, {"prompt": "Capital of France?"}, tokenizer,
                         StrategyConfig(kind="few-shot", k=2), shots(3))
    assert built.messages is not None
    assert [m["role"] for m in built.messages] == ["system", "user", "assistant", "user",
                                                    "assistant", "user"]
    expected = tokenizer.apply_chat_template(built.messages, tokenize=True,
                                             add_generation_prompt=True)["input_ids"]
    assert built.input_ids == list(expected)
    assert leading_bos(built.input_ids, tokenizer.bos_token_id) == 1
    assert built.text.endswith("<|im_start|>assistant\n")


def test_chat_path_one_bos_when_the_tokenizer_also_adds_one(bos_adding_tokenizer):
    tok = bos_adding_tokenizer
    built = build_prompt(QA, {"prompt": "hi"}, tok, StrategyConfig())
    assert built.text.startswith(tok.bos_token)
    # The trap the build avoids (trl #1400): tokenizing the rendered chat text with special
    # tokens doubles BOS with this tokenizer.
    assert leading_bos(tok(built.text)["input_ids"], tok.bos_token_id) == 2
    assert leading_bos(built.input_ids, tok.bos_token_id) == 1


def test_raw_mode_plain_text_and_one_bos(bos_adding_tokenizer):
    tok = bos_adding_tokenizer
    built = build_prompt(QA, {"prompt": "hi"}, tok, StrategyConfig(kind="few-shot", k=1,
                                                                    chat=False), shots(2))
    assert built.messages is None
    assert built.text == "Answer with one word.\n\nQ: question 0 word word word\nA: answer 0" \
                         "\n\nQ: hi\nA:"
    assert leading_bos(built.input_ids, tok.bos_token_id) == 1


def test_chat_mode_without_a_chat_template_is_a_clear_error(bos_adding_tokenizer):
    from copy import deepcopy

    tok = deepcopy(bos_adding_tokenizer)
    tok.chat_template = None
    assert build_prompt(QA, {"prompt": "x"}, tok, StrategyConfig()).messages is None  # auto: raw
    with pytest.raises(TunedeckError, match="chat template"):
        build_prompt(QA, {"prompt": "x"}, tok, StrategyConfig(chat=True))


# --------------------------------------------------------------------------- budget


def test_few_shot_overflow_drops_examples_with_a_warning(tokenizer):
    examples = shots(6, words=30)
    full = build_prompt(QA, {"prompt": "my own question"}, tokenizer,
                        StrategyConfig(kind="few-shot", k=6), examples, max_new_tokens=50,
                        context_window=4096)
    assert full.examples_used == 6 and full.warnings == []
    window = full.budget.used - 60 + 50  # room for all but about two examples
    built = build_prompt(QA, {"prompt": "my own question"}, tokenizer,
                         StrategyConfig(kind="few-shot", k=6), examples, max_new_tokens=50,
                         context_window=window)
    assert 0 < built.examples_dropped < 6
    assert built.examples_used + built.examples_dropped == 6
    assert built.warnings and f"{built.examples_dropped} few-shot example" in built.warnings[0]
    assert "do not fit" in built.warnings[0]
    assert built.budget.used == len(built.input_ids) <= built.budget.available == window - 50
    assert "my own question" in built.text  # the user's input is whole
    # the examples kept are the first ones (most relevant first)
    assert "question 0 " in built.text and "question 5 " not in built.text


def test_input_that_does_not_fit_is_an_error_never_truncated(tokenizer):
    long_input = "word " * 400
    with pytest.raises(TunedeckError, match="not cut"):
        build_prompt(QA, {"prompt": long_input}, tokenizer, StrategyConfig(kind="few-shot", k=2),
                     shots(2), max_new_tokens=100, context_window=300)


def test_prefix_len_covers_system_and_examples(tokenizer):
    strategy = StrategyConfig(kind="few-shot", k=3)
    a = build_prompt(QA, {"prompt": "first input"}, tokenizer, strategy, shots(3))
    b = build_prompt(QA, {"prompt": "a different one"}, tokenizer, strategy, shots(3))
    assert a.prefix_len == b.prefix_len
    assert a.input_ids[:a.prefix_len] == b.input_ids[:b.prefix_len]
    assert a.input_ids[a.prefix_len] != b.input_ids[b.prefix_len]
    head = tokenizer.decode(a.input_ids[:a.prefix_len])
    assert "answer 2" in head and "first input" not in head
    zero = build_prompt(QA, {"prompt": "first input"}, tokenizer, StrategyConfig())
    assert 0 < zero.prefix_len < a.prefix_len


# --------------------------------------------------------------------------- selection


def test_selection_first_random_similar():
    pool = [Example(prompt=p, completion="x", line=i + 1) for i, p in enumerate([
        "refund for a broken toaster", "the weather is sunny today", "how to bake bread",
        "invoice total for March", "my toaster sparks when plugged in", "train times to Leeds"])]
    first = select_examples(pool, StrategyConfig(kind="few-shot", k=2))
    assert first == pool[:2]
    r1 = select_examples(pool, StrategyConfig(kind="few-shot", k=3, selection="random", seed=1))
    r1_again = select_examples(pool, StrategyConfig(kind="few-shot", k=3, selection="random",
                                                    seed=1))
    r2 = select_examples(pool, StrategyConfig(kind="few-shot", k=3, selection="random", seed=2))
    assert r1 == r1_again and r1 != r2
    similar = select_examples(pool, StrategyConfig(kind="few-shot", k=2, selection="similar"),
                              "the toaster sparks and smells")
    assert {e.line for e in similar} == {1, 5}
    assert similar[0].line == 5  # most similar first


def test_similar_selection_in_a_built_prompt(tokenizer):
    pool = load_examples(sample_path("sentiment"))
    target = pool[len(pool) // 2]
    query = target.prompt.rstrip(".!") + " indeed"
    built = build_prompt(get_template("sentiment"), {"prompt": query}, tokenizer,
                         StrategyConfig(kind="few-shot", k=2, selection="similar"), pool)
    assert built.examples_used == 2
    shown = [m["content"] for m in built.messages if m["role"] == "user"][:-1]
    assert target.prompt in shown[0]  # the near-duplicate row ranks first
    assert built.messages[2] == {"role": "assistant", "content": target.completion}


def test_few_shot_without_examples_is_an_error(tokenizer):
    with pytest.raises(TunedeckError, match="needs examples"):
        build_prompt(QA, {"prompt": "x"}, tokenizer, StrategyConfig(kind="few-shot"))


def test_bad_strategy_values_are_errors():
    with pytest.raises(TunedeckError, match="few-shot"):
        StrategyConfig(kind="fewshot")
    with pytest.raises(TunedeckError, match="regular expression"):
        StrategyConfig(kind="cot", answer_pattern="(unclosed")


# --------------------------------------------------------------------------- chain of thought


def test_zero_shot_cot_appends_the_trigger(tokenizer):
    built = build_prompt(QA, {"prompt": "What is 2+2?"}, tokenizer,
                         StrategyConfig(kind="cot", cot_trigger="Think it through."))
    assert built.messages[-1]["content"] == "Q: What is 2+2?\nA:\nThink it through."


def test_few_shot_cot_shows_rationales_from_the_dataset(tokenizer):
    pool = load_examples(sample_path("arithmetic"))
    built = build_prompt(get_template("arithmetic-cot"), {"prompt": "What is 12 times 3?"},
                         tokenizer, StrategyConfig(kind="few-shot-cot", k=2), pool)
    replies = [m["content"] for m in built.messages if m["role"] == "assistant"]
    assert replies == [f"{e.rationale}\nAnswer: {e.answer}" for e in pool[:2]]
    assert extract_answer(replies[0]) == pool[0].answer


def test_few_shot_cot_without_rationale_names_the_line(tokenizer):
    pool = [Example(prompt="2+2", completion="4", line=7)]
    with pytest.raises(TunedeckError, match="line 7.*rationale"):
        build_prompt(QA, {"prompt": "3+3"}, tokenizer, StrategyConfig(kind="few-shot-cot", k=1),
                     pool)


@pytest.mark.parametrize("text, pattern, expected", [
    ("3 + 4 = 7.\nAnswer: 7", None, "7"),
    ("Answer: 5\nwait, I was wrong.\nFinal answer: 6.", None, "6"),
    ("**Answer:** 12", None, "12"),
    ("So the answer is 42.", None, "42"),
    ("no conclusion here", None, None),
    ("", None, None),
    ("result=17; result=19", r"result=(\d+)", "19"),
    ("total 8 apples", r"\d+", "8"),
    ("Answer: 7", r"nothing(\d)", None),
])
def test_extract_answer(text, pattern, expected):
    assert extract_answer(text, pattern) == expected


def test_majority_vote_and_agreement():
    assert majority_vote(["6", "6.0", "7", None, " 6 "]) == ("6", 0.6)
    assert majority_vote(["1,000", "1000", "$1000", "999"]) == ("1,000", 0.75)
    assert majority_vote(["Paris", "paris."]) == ("Paris", 1.0)
    assert majority_vote(["a", "b"]) == ("a", 0.5)  # a tie goes to the first seen
    assert majority_vote([None, None]) == (None, 0.0)
    assert majority_vote([]) == (None, 0.0)


def test_self_consistency_votes_over_samples():
    outputs = ["x\nAnswer: 4", "y\nAnswer: 5", "z\nAnswer: 4", "no answer"]
    vote = self_consistency(lambda i: outputs[i], samples=4)
    assert vote.answers == ["4", "5", "4", None]
    assert (vote.answer, vote.agreement) == ("4", 0.5)
    assert vote.completions == outputs


def test_the_vote_picks_the_first_completion_that_gave_the_answer():
    voted = vote(["a\nAnswer: 5", "b\nAnswer: 4", "c\nAnswer:  4 ", "d"], extract_answer)
    assert (voted.answer, voted.winner) == ("4", "b\nAnswer: 4")
    assert vote(["none", "at all"], extract_answer).winner == "none"


class _FakeGenerator:
    """Stands in for engine.generation.Generator: one scripted text per call."""

    def __init__(self, texts, cancel_at=None):
        self.texts, self.cancel_at, self.calls = list(texts), cancel_at, []

    def generate(self, input_ids, params, on_text=None, cancel=None, prefix_len=0):
        from engine.generation import GenerationResult

        index = len(self.calls)
        self.calls.append(params)
        text = self.texts[index]
        if on_text:
            on_text(text)
        if self.cancel_at == index and cancel is not None:
            cancel.set()
        reason = "cancelled" if cancel is not None and cancel.is_set() else "eos"
        return GenerationResult(text, len(input_ids), 3, 0.1, 10.0, 0.4, reason)


def _built():
    from engine.strategies import Budget, BuiltPrompt

    return BuiltPrompt(None, "q", [1, 2, 3], 0, 0, 0, [], Budget(3, 100, 200))


def test_run_strategy_samples_with_a_seed_each_and_votes():
    import threading

    from engine.generation import GenerationParams
    from engine.strategy_run import run_strategy

    generator = _FakeGenerator(["Answer: 4", "Answer: 5", "Answer: 4"])
    streamed = []
    run = run_strategy(generator, _built(), StrategyConfig(kind="self-consistency", samples=3),
                       GenerationParams(), on_text=lambda i, d: streamed.append((i, d)))
    assert (run.answer, run.vote.agreement, run.completion_tokens) == ("4", 2 / 3, 9)
    assert [(p.temperature, p.seed) for p in generator.calls] == [(0.7, 0), (0.7, 1), (0.7, 2)]
    assert [i for i, _ in streamed] == [0, 1, 2]
    # As asked (the CLI): greedy stays greedy; a cancel ends the drawing after its sample.
    generator = _FakeGenerator(["Answer: 1", "Answer: 2", "Answer: 3"], cancel_at=1)
    run = run_strategy(generator, _built(), StrategyConfig(kind="self-consistency", samples=3),
                       GenerationParams(seed=7), cancel=threading.Event(), greedy_fallback=None)
    assert [(p.temperature, p.seed) for p in generator.calls] == [(0.0, 7), (0.0, 8)]
    assert run.cancelled and run.vote.answers == ["1", "2"]


def test_run_strategy_generates_once_and_reads_a_cot_answer():
    from engine.generation import GenerationParams
    from engine.strategy_run import run_strategy

    params = GenerationParams(temperature=0.0)
    generator = _FakeGenerator(["thinking\nAnswer: 12"])
    run = run_strategy(generator, _built(), StrategyConfig(kind="cot"), params)
    assert (run.answer, run.vote, generator.calls) == ("12", None, [params])
    run = run_strategy(_FakeGenerator(["Paris"]), _built(), StrategyConfig(), params)
    assert (run.answer, run.answers, run.texts) == (None, [], ["Paris"])


def test_self_consistency_prompt_is_few_shot_cot_with_examples_else_zero_shot_cot(tokenizer):
    strategy = StrategyConfig(kind="self-consistency", k=1)
    alone = build_prompt(QA, {"prompt": "2+2?"}, tokenizer, strategy)
    assert alone.messages[-1]["content"].endswith(strategy.cot_trigger)
    pool = [Example(prompt="1+1?", rationale="One plus one is two.", answer="2", line=1)]
    shown = build_prompt(QA, {"prompt": "2+2?"}, tokenizer, strategy, pool)
    assert shown.messages[2]["content"] == "One plus one is two.\nAnswer: 2"
    assert not shown.messages[-1]["content"].endswith(strategy.cot_trigger)


def test_prefix_keeps_a_task_instruction_in_the_system_message(tokenizer):
    schema = "Tables: orders(id, total)."
    strategy = StrategyConfig(kind="few-shot", k=2)
    pool = load_examples(sample_path("text_to_sql"))
    a = build_prompt(get_template("text-to-sql"), {"instruction": schema, "prompt": "How many?"},
                     tokenizer, strategy, pool)
    assert a.messages[0] == {"role": "system", "content": schema}
    head = tokenizer.decode(a.input_ids[:a.prefix_len])
    assert schema in head and pool[1].completion in head and "How many?" not in head


def test_chat_template_without_a_system_role_gets_it_in_the_first_user_turn(
        bos_adding_tokenizer):
    from copy import deepcopy

    tok = deepcopy(bos_adding_tokenizer)
    tok.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}"
        "{% endif %}{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    built = build_prompt(QA, {"prompt": "hi"}, tok, StrategyConfig())
    assert built.text.endswith("<user>Answer with one word.\n\nQ: hi\nA:<assistant>")
    assert built.messages == [{"role": "user", "content": "Answer with one word.\n\nQ: hi\nA:"}]
    assert leading_bos(built.input_ids, tok.bos_token_id) == 1


def test_examples_borrow_what_the_data_lacks_from_the_user_values(tokenizer):
    t = PromptTemplate(name="g", template="{{ instruction }}\n{{ prompt }}")
    pool = [Example(prompt="", completion="c0", line=1), Example(prompt="p1", completion="c1",
                                                                 instruction="own", line=2)]
    built = build_prompt(t, {"instruction": "Be brief.", "prompt": "mine"}, tokenizer,
                         StrategyConfig(kind="few-shot", k=2), pool)
    users = [m["content"] for m in built.messages if m["role"] == "user"]
    assert users == ["Be brief.", "own\np1", "Be brief.\nmine"]

"""The evaluator and the matrix: batched generation, completion loss, the per-example cache
(resume after a cancel), adapters switched per column, the CLI, and the recommendation."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest

from engine.evaluation import Column, EvalSpec, columns_from_names, run_matrix
from engine.evaluation.batched import completion_losses, generate_batch
from engine.evaluation.matrix import MatrixResult, recommend
from engine.evaluation.metrics import ColumnMetrics
from engine.evaluation.spec import ColumnResult


@pytest.fixture(autouse=True)
def few_threads():
    """One torch thread: on a shared 2-core machine two threads that wait on each other make
    generation ~10× slower (measured: 8.4 s vs 87 s for 20 tokens)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------- mechanics


@pytest.mark.slow
def test_batched_left_padded_greedy_matches_one_by_one(default_model):
    model, tok = default_model.model, default_model.tokenizer
    prompts = [chat_ids(tok, "What is the capital of France?"),
               chat_ids(tok, "Name one colour of the rainbow. Reply with one word only, please.")]
    assert len(prompts[0]) != len(prompts[1])  # so the batch really is padded
    batched = generate_batch(model, tok, prompts, max_new_tokens=12)
    single = [generate_batch(model, tok, [p], max_new_tokens=12)[0] for p in prompts]
    assert [g[0][0] for g in batched] == [g[0][0] for g in single]
    assert "Paris" in batched[0][0][0]


def test_completion_loss_batched_equals_unpadded(tiny_model_dir):
    import torch

    from engine import models

    loaded = models.load(str(tiny_model_dir))
    model, tok = loaded.model, loaded.tokenizer
    prompts = [chat_ids(tok, "short"), chat_ids(tok, "a much longer question with many words")]
    refs = ["SELECT 1", "SELECT a, b FROM t WHERE c = 2"]
    batched = completion_losses(model, tok, prompts, refs, chat=True)
    for prompt, ref, (loss, n) in zip(prompts, refs, batched, strict=True):
        target = tok(ref, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([prompt + target])
        labels = torch.tensor([[-100] * len(prompt) + target])
        with torch.inference_mode():
            expected = model(input_ids=ids, labels=labels).loss.item()
        assert n == len(target)
        assert loss == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------- the matrix


@pytest.mark.slow
def test_small_matrix_on_the_default_model_then_from_the_cache(default_model):
    spec = EvalSpec(data="sample_data/text_to_sql", limit=3, max_new_tokens=40)
    columns = columns_from_names("zero-shot,k1", adapter=False)
    seen = []
    result = run_matrix(spec, columns, loaded=default_model, progress=seen.append)
    assert result.task == "sql" and result.examples == 3
    assert [c.column.name for c in result.columns] == ["zero-shot", "few-shot k=1"]
    zero, one = result.columns
    for column in result.columns:
        assert column.metrics.n == 3
        assert column.cached == 0
        assert sum(column.metrics.statuses.values()) == 3
        for row in column.rows:
            assert row["status"] in ("correct", "wrong", "syntax_error", "exec_error",
                                     "no_answer")
            assert row["output"] is not None and row["latency_s"] > 0
    # Few-shot prompts carry an example more: more tokens per query.
    assert one.metrics.prompt_tokens > zero.metrics.prompt_tokens + 20
    assert all(r["examples_used"] == 1 for r in one.rows)
    assert zero.metrics.loss is not None and zero.metrics.perplexity > 1
    assert seen[-1].done == seen[-1].total == 6 and seen[-1].eta_s == 0
    assert result.recommendation.startswith("Best prompting:")
    saved = json.loads((result.saved_to / "result.json").read_text())
    assert saved["table"][0]["column"] == "zero-shot"
    rows = list(csv.DictReader(io.StringIO((result.saved_to / "matrix.csv").read_text())))
    assert [r["column"] for r in rows] == ["zero-shot", "few-shot k=1"]

    again = run_matrix(spec, columns, loaded=default_model)
    assert [c.cached for c in again.columns] == [3, 3]
    assert [c.rows for c in again.columns] == [c.rows for c in result.columns]


@pytest.mark.slow
def test_cancel_then_resume_from_the_cache(default_model):
    spec = EvalSpec(data="sample_data/sentiment", limit=3, batch_size=1, max_new_tokens=6)
    column = [Column("zero-shot", "zero-shot")]
    cancel = threading.Event()

    def stop_after_first(progress) -> None:
        if progress.done >= 1:
            cancel.set()

    first = run_matrix(spec, column, loaded=default_model, progress=stop_after_first,
                       cancel=cancel)
    assert first.cancelled and len(first.columns[0].rows) == 1
    assert "cancelled" in first.recommendation
    resumed = run_matrix(spec, column, loaded=default_model)
    assert resumed.columns[0].cached == 1
    assert len(resumed.columns[0].rows) == 3
    assert resumed.columns[0].metrics.confusion is not None
    assert resumed.columns[0].metrics.confusion.total == 3


def test_adapter_columns_switch_the_adapter_and_restore_the_model(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from engine import models

    # An adapter whose B matrices are not zero, so it really changes the outputs.
    base = models.load(str(tiny_model_dir)).model
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))

    loaded = models.load(str(tiny_model_dir))
    spec = EvalSpec(data="sample_data/sentiment", limit=2, max_new_tokens=4,
                    adapter=str(adapter_dir))
    columns = [Column("zero-shot", "zero-shot", loss=True),
               Column("adapter", "zero-shot", adapter=True, loss=True)]
    result = run_matrix(spec, columns, loaded=loaded)
    base_col, adapter_col = result.columns
    assert result.adapter is not None
    assert base_col.metrics.loss != pytest.approx(adapter_col.metrics.loss, rel=1e-3)
    # The adapter attached for the evaluation is gone again: the model is the plain base.
    assert not any("lora" in name for name, _ in loaded.model.named_modules())
    plain = models.load(str(tiny_model_dir))
    again = run_matrix(EvalSpec(data="sample_data/sentiment", limit=2, max_new_tokens=4,
                                use_cache=False), columns[:1], loaded=plain)
    assert again.columns[0].metrics.loss == pytest.approx(base_col.metrics.loss, rel=1e-4)


def test_cot_and_self_consistency_columns_vote(tiny_model_dir):
    from engine import models

    loaded = models.load(str(tiny_model_dir))
    spec = EvalSpec(data="sample_data/arithmetic", limit=2, samples=3, max_new_tokens=4,
                    cot_max_new_tokens=6)
    result = run_matrix(spec, columns_from_names("cot,sc"), loaded=loaded)
    assert result.task == "answer"
    cot, sc = result.columns
    assert all(r["completion_tokens"] <= 6 for r in cot.rows)
    for row in sc.rows:
        assert len(row["samples"]) == 3  # num_return_sequences per example
        assert 0.0 <= row["agreement"] <= 1.0
        assert row["output"] in row["samples"]
    # A random tiny model writes no "Answer:" line: nothing is scored as right by accident.
    assert {r["status"] for r in cot.rows + sc.rows} <= {"no_answer", "wrong"}


def test_adapter_columns_need_an_adapter():
    from engine.errors import TunedeckError

    with pytest.raises(TunedeckError, match="need an adapter"):
        run_matrix(EvalSpec(limit=1), [Column("adapter", adapter=True)])
    with pytest.raises(TunedeckError, match="Unknown column 'k7'"):
        columns_from_names("zero-shot,k7")
    names = [c.name for c in columns_from_names(None, adapter=False)]
    assert names == ["zero-shot", "few-shot k=1", "few-shot k=3", "few-shot k=5", "cot",
                     "self-consistency"]
    assert len(columns_from_names("all")) == 8


# --------------------------------------------------------------------------- recommendation


def _result(scores: dict[str, tuple[float, float]], n: int = 30) -> MatrixResult:
    columns = []
    for name, (accuracy, tokens) in scores.items():
        column = Column(name, "few-shot" if "k=" in name else "zero-shot",
                        adapter=name.startswith("adapter"))
        columns.append(ColumnResult(column, ColumnMetrics(n=n, accuracy=accuracy,
                                                          prompt_tokens=tokens), []))
    return MatrixResult(spec=EvalSpec(), task="sql", source="x", model="m", adapter="a",
                        columns=columns, examples=n)


def test_recommendation_adapter_matches_five_shot_at_fewer_tokens():
    text = recommend(_result({"zero-shot": (0.2, 150), "few-shot k=5": (0.6, 900),
                              "adapter": (0.6, 150)}))
    assert "Best prompting: few-shot k=5 at 60% execution accuracy" in text
    assert "The adapter column matches few-shot k=5 (60% vs 60%) at 1/6 of the prompt tokens" \
        in text
    assert "use the fine-tuned adapter" in text


def test_recommendation_keeps_prompting_when_the_adapter_trails():
    text = recommend(_result({"zero-shot": (0.3, 150), "few-shot k=3": (0.5, 500),
                              "adapter": (0.2, 150)}))
    assert "trails few-shot k=3 by 30%" in text
    assert "Recommendation: keep prompting (few-shot k=3)" in text


def test_recommendation_prefers_the_cheaper_of_tied_prompts():
    text = recommend(_result({"zero-shot": (0.5, 150), "few-shot k=3": (0.5, 500)}))
    assert text.startswith("Best prompting: zero-shot at 50%")
    assert "No adapter was evaluated" in text


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_eval_matrix_csv_and_json(default_model_dir, capsys):
    from cli.main import main

    args = ["eval", "matrix", "--data", "sample_data/sentiment", "--limit", "2",
            "--columns", "zs", "--max-new-tokens", "4", "--quiet"]
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["column"] == "zero-shot" and rows[0]["n"] == "2"
    assert main([*args, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["task"] == "classification" and data["examples"] == 2
    assert data["columns"][0]["cached"] == 2  # the second run read the first one's cache
    assert main(["eval", "--data", "sample_data/sentiment", "--limit", "0"]) == 1
    assert "--limit must be at least 1" in capsys.readouterr().err


def test_cli_eval_output_is_refused_before_any_generation_unless_forced(tmp_path, capsys,
                                                                         monkeypatch):
    from cli.main import main
    from engine import evaluation

    monkeypatch.setattr(evaluation, "run_matrix",
                        lambda *a, **k: pytest.fail("generated before checking --output"))
    kept = tmp_path / "matrix.json"
    kept.write_text("earlier results\n")
    args = ["eval", "matrix", "--data", "sample_data/sentiment", "--columns", "zs", "--quiet"]
    assert main([*args, "--output", str(kept)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert kept.read_text() == "earlier results\n"
    data = Path("sample_data/sentiment/train.jsonl").resolve()
    assert main([*args, "--output", str(data), "--force"]) == 1  # never onto its input
    assert "is this command's input" in capsys.readouterr().err

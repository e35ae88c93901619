"""The shipped SQL recipe's pieces: a training template shared with evaluation, `method: auto`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from engine.errors import ConfigError
from engine.training import data as tdata
from engine.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "sample_data" / "text_to_sql"


def test_without_a_template_the_instruction_and_question_are_one_user_turn():
    conv = tdata.conversations(SQL, {}, "train", limit=1)[0]
    assert [m["role"] for m in conv.prompt] == ["user"]
    assert conv.prompt[0]["content"].startswith("Write one Teradata SQL query")
    assert "Tables: customers(" in conv.prompt[0]["content"]


def test_the_tuned_template_trains_on_the_question_alone():
    plain = tdata.conversations(SQL, {}, "train", limit=3)
    tuned = tdata.conversations(SQL, {}, "train", limit=3, template="text-to-sql-tuned")
    for a, b in zip(plain, tuned, strict=True):
        assert b.prompt[0] == {"role": "system",
                               "content": "Write one Teradata SQL query for the retail database."}
        assert b.prompt[1]["role"] == "user"
        assert "Tables:" not in b.prompt[1]["content"]
        assert a.prompt[0]["content"].endswith(b.prompt[1]["content"])  # the question itself
        assert b.completion == a.completion and b.line == a.line


def test_the_schema_as_a_system_message(default_model_dir):
    from transformers import AutoTokenizer

    conv = tdata.conversations(SQL, {}, "train", limit=1, template="text-to-sql")[0]
    assert conv.prompt[0]["role"] == "system" and "Tables: customers(" in conv.prompt[0]["content"]
    assert conv.prompt[1]["content"].startswith("Question: ") and conv.prompt[1]["content"].endswith(
        "SQL:")
    # What trains is exactly the prompt the evaluator builds for a zero-shot adapter column.
    from engine.strategies import build_prompt, example_values
    from engine.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir))
    row = tdata.load_examples(SQL, {}, "train", limit=1)[0]
    built = build_prompt(get_template("text-to-sql"), example_values(row), tokenizer)
    assert tdata.prompt_ids(tokenizer, conv) == built.input_ids


def test_an_unknown_training_template_is_refused_with_the_field():
    with pytest.raises(ConfigError, match="template: No template named 'nope'"):
        TrainConfig(template="nope").validate(device_checks=False)


def test_method_auto_is_lora_on_a_cpu_and_says_why():
    from engine.training.method_fit import fit_method

    config, why = fit_method(TrainConfig(method="auto"), device="cpu")
    assert config.method == "lora" and "method auto → lora" in why and "cpu" in why
    same, none = fit_method(TrainConfig(method="qlora"), device="cpu")
    assert same.method == "qlora" and none == ""


def test_method_auto_is_qlora_on_cuda(monkeypatch):
    from engine import models
    from engine.training.method_fit import fit_method

    monkeypatch.setattr(models, "device_policy",
                        lambda device=None: models.DevicePolicy("cuda", "bfloat16", True))
    monkeypatch.setattr(models, "probe_4bit", lambda device=None: (True, "ok"))
    assert fit_method(TrainConfig(method="auto"))[0].method == "qlora"
    monkeypatch.setattr(models, "probe_4bit", lambda device=None: (False, "no kernels"))
    config, why = fit_method(TrainConfig(method="auto"))
    assert config.method == "lora" and "no kernels" in why


def test_a_run_records_the_method_auto_chose():
    from engine.training.launch import create_run

    run = create_run(TrainConfig(method="auto", template="text-to-sql-tuned"))
    saved = yaml.safe_load(run.config_path.read_text())
    assert saved["method"] == "lora" and saved["template"] == "text-to-sql-tuned"
    from engine.adapters import read_run_config

    assert read_run_config(run)["template"] == "text-to-sql-tuned"


def test_preflight_names_the_method_auto_chose():
    from engine.training.preflight import preflight

    report = preflight(TrainConfig(method="auto", limit=8, max_seq_len=512))
    assert report.ok, report.errors
    assert report.method == "lora"
    assert "Method: lora (method auto → lora" in report.text()


def test_the_adapter_column_defaults_to_the_template_the_adapter_trained_with():
    from types import SimpleNamespace

    from engine.evaluation.evaluator import EvalSpec, Evaluation

    def evaluation(spec_template, trained):
        session = SimpleNamespace(adapter_info=SimpleNamespace(template=trained))
        data = SimpleNamespace(task="text")
        return Evaluation(EvalSpec(data=str(SQL), adapter_template=spec_template), session, data)

    assert evaluation(None, "text-to-sql-tuned").adapter_template() == "text-to-sql-tuned"
    assert evaluation(None, "").adapter_template() == "instruction"
    assert evaluation("text-to-sql", "text-to-sql-tuned").adapter_template() == "text-to-sql"


def test_the_train_form_fits_the_shipped_recipe_to_the_sql_sample():
    from engine.training.suggest import suggest

    fitted = suggest(TrainConfig(dataset="sample_data/text_to_sql", method="qlora"))
    recipe = TrainConfig.from_yaml(ROOT / "configs" / "sql.yaml")
    assert fitted.config.template == recipe.template == "text-to-sql-tuned"
    assert fitted.config.method == "auto" and fitted.config.learning_rate == recipe.learning_rate
    assert fitted.config.limit is None and fitted.config.max_steps == -1
    assert fitted.rows == 336
    assert fitted.steps == math.ceil(336 / (recipe.batch_size * recipe.grad_accum) * recipe.epochs)
    assert "the shipped recipe sql.yaml" in fitted.reasons[0]
    assert "no EOS is cut" in fitted.reasons[1]


def test_a_quick_demo_config_is_not_a_fitted_default():
    from engine.training.shipped import recipe_for

    assert recipe_for(TrainConfig(dataset="sample_data/sentiment")) is None  # max_steps: 30
    assert recipe_for(TrainConfig(dataset="sample_data/text_to_sql", model="other")) is None

"""Prompt templates: sandboxed rendering, error locations, built-ins and user YAML files."""

from __future__ import annotations

import json

import pytest

from engine import paths
from engine.errors import TunedeckError
from engine.templates import (
    PromptTemplate,
    TemplateError,
    builtin_templates,
    get_template,
    load_templates,
    render_system,
    render_text,
    save_template,
)


def tpl(text: str, system: str = "") -> PromptTemplate:
    return PromptTemplate(name="t", template=text, system=system)


def test_render_and_variables_in_order_of_appearance():
    t = tpl("{% if instruction | default('') %}\n{{ instruction }}\n\n{% endif %}\nQ: {{ prompt }}",
            system="You answer {{ style }}.")
    assert t.variables() == ["style", "instruction", "prompt"]
    assert render_text(t, {"prompt": "2+2?"}) == "Q: 2+2?"
    assert render_text(t, {"prompt": "2+2?", "instruction": "Be brief."}) == "Be brief.\n\nQ: 2+2?"
    assert render_system(t, {"style": "tersely"}) == "You answer tersely."


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ prompt.__class__ }}",
    "{% set l = [] %}{{ l.append(1) }}",  # immutable sandbox: no mutation
    "{{ 'x' * 1000000000 }}",  # unbounded allocation
])
def test_sandbox_blocks_escapes(source):
    with pytest.raises(TemplateError) as info:
        render_text(tpl("ok\n" + source), {"prompt": "p"})
    err = info.value
    assert err.line == 2
    assert err.message.startswith("blocked by the sandbox")


def test_sandbox_escape_is_reported_as_unsafe():
    with pytest.raises(TemplateError) as info:
        render_text(tpl("{{ ''.__class__.__mro__ }}"), {})
    assert "blocked by the sandbox" in info.value.message
    assert "__class__" in info.value.message
    assert info.value.line == 1


def test_syntax_error_reports_line():
    with pytest.raises(TemplateError) as info:
        tpl("first line\nsecond {{ prompt }}\n{% if prompt %}\nnever closed").variables()
    assert info.value.line == 4 or info.value.line == 3
    assert "line" in str(info.value)
    with pytest.raises(TemplateError) as info:
        render_text(tpl("a\nb\n{{ prompt | nosuchfilter }}"), {"prompt": "x"})
    assert info.value.line == 3
    assert "nosuchfilter" in info.value.message


def test_undefined_variable_reports_line_column_and_fix():
    with pytest.raises(TemplateError) as info:
        render_text(tpl("Title\n\nQ: {{ prompt }} and {{ missing }}"), {"prompt": "p"})
    err = info.value
    assert (err.line, err.column) == (3, 24)
    assert "'missing' is undefined" in err.message
    assert "default('')" in err.message
    assert str(err).startswith("template 't', line 3, column 24:")


def test_error_in_system_message_names_it():
    t = tpl("{{ prompt }}", system="Be {{ tone }")
    with pytest.raises(TemplateError) as info:
        t.check()
    assert info.value.part == "system"
    assert "system message" in str(info.value)


def test_builtins_one_per_sample_dataset_and_generic():
    names = {t.name for t in builtin_templates()}
    assert {"text-to-sql", "sentiment", "arithmetic-cot", "instruction"} <= names
    for t in builtin_templates():
        text = render_text(t, {"prompt": "PROMPT", "instruction": "INSTR"})
        assert "PROMPT" in text
        assert len(text) < 200  # short: the default model has 135M parameters


def test_builtins_render_sample_rows():
    from engine.data import load_examples, sample_path
    from engine.strategies import example_values

    for template, sample in (("sentiment", "sentiment"), ("arithmetic-cot", "arithmetic")):
        row = load_examples(sample_path(sample), limit=1)[0]
        assert row.prompt in render_text(get_template(template), example_values(row))


def test_save_and_load_user_template_overrides_builtin(tunedeck_home):
    assert not paths.templates_dir().exists()  # nothing created before a save
    mine = PromptTemplate(name="sentiment", system="Label it.",
                          template="Review:\n{{ prompt }}\nLabel:", description="mine")
    path = save_template(mine)
    assert path.parent == paths.templates_dir()
    assert "|" in path.read_text()  # multi-line text stays a readable block
    loaded = get_template("sentiment")
    assert loaded == mine
    assert [t.name for t in load_templates()].count("sentiment") == 1


def test_is_builtin_reads_the_shipped_files_once(monkeypatch):
    from engine import templates

    reads: list[int] = []
    real = templates.builtin_templates
    monkeypatch.setattr(templates, "builtin_templates", lambda: reads.append(1) or real())
    templates._builtin_names.cache_clear()
    save_template(PromptTemplate(name="mine", template="{{ prompt }}"))
    save_template(PromptTemplate(name="sentiment", template="Mine: {{ prompt }}"))
    assert templates.is_builtin("sentiment")  # shipped, even with a user file replacing it
    assert templates.is_builtin("instruction")
    assert not templates.is_builtin("mine")
    assert len(reads) == 1


def test_save_rejects_a_broken_template():
    with pytest.raises(TemplateError):
        save_template(PromptTemplate(name="bad", template="{% for x in %}"))
    assert not paths.templates_dir().exists() or not list(paths.templates_dir().iterdir())


def test_broken_user_file_names_file_and_line():
    folder = paths.ensure_dir(paths.templates_dir())
    bad = folder / "bad.yaml"
    bad.write_text("name: bad\ntemplate: |\n  ok\n bad: [indent\n")
    with pytest.raises(TunedeckError) as info:
        load_templates()
    assert "bad.yaml" in str(info.value) and "line" in str(info.value)
    errors: list[TunedeckError] = []
    names = [t.name for t in load_templates(errors)]
    assert "instruction" in names and len(errors) == 1

    bad.write_text(json.dumps({"name": "x", "template": "{{ a }", "sytem": "typo"}))
    with pytest.raises(TunedeckError) as info:
        load_templates()
    assert "sytem" in str(info.value)  # unknown keys are named, not ignored


def test_get_template_unknown_lists_available():
    with pytest.raises(TunedeckError) as info:
        get_template("nope")
    assert "instruction" in str(info.value)

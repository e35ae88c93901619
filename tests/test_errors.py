"""engine.errors.first_line, and the one-line messages built with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import TunedeckError, first_line


@pytest.mark.parametrize("message, kwargs, expected", [
    ("one line", {}, "one line"),
    ("first\nsecond\nthird", {}, "first"),
    ("\n\n  indented first  \nsecond", {}, "indented first  "),  # stripped as a whole
    ("", {}, ""),
    ("   \n  ", {}, ""),
    ("", {"default": "ValueError"}, "ValueError"),
    ("x" * 400 + "\nmore", {"limit": 300}, "x" * 300),
    ("short", {"limit": 300}, "short"),
    ("", {"limit": 3, "default": "KeyError"}, "KeyError"),  # the default is never cut
])
def test_first_line(message, kwargs, expected):
    assert first_line(ValueError(message), **kwargs) == expected


def test_first_line_of_an_exception_with_no_args():
    assert first_line(RuntimeError()) == ""
    assert first_line(RuntimeError(), default="RuntimeError") == "RuntimeError"


def test_transpile_sql_reports_the_first_line(monkeypatch):
    import sqlglot
    from sqlglot.errors import ParseError

    from engine.evaluation.metrics import SqlSyntaxError, transpile_sql

    def raising(err):
        def transpile(*_args, **_kwargs):
            raise err
        return transpile

    monkeypatch.setattr(sqlglot, "transpile", raising(ParseError("\nInvalid expression\nSELEC")))
    with pytest.raises(SqlSyntaxError, match=r"^Invalid expression$"):
        transpile_sql("SELEC 1")
    monkeypatch.setattr(sqlglot, "transpile", raising(ParseError("")))
    with pytest.raises(SqlSyntaxError, match=r"^ParseError$"):
        transpile_sql("SELEC 1")
    monkeypatch.setattr(sqlglot, "transpile", raising(IndexError("list index\nout of range")))
    with pytest.raises(SqlSyntaxError, match=r"^IndexError: list index$"):
        transpile_sql("SELECT 1")
    monkeypatch.setattr(sqlglot, "transpile", raising(IndexError()))
    with pytest.raises(SqlSyntaxError, match=r"^IndexError: $"):
        transpile_sql("SELECT 1")


def test_hub_dataset_failure_is_one_line(monkeypatch):
    import datasets

    from engine.data.readers import _from_hub

    def load_dataset(*_args, **_kwargs):
        raise ConnectionError("Couldn't reach the hub\nTraceback-like detail")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(TunedeckError) as caught:
        _from_hub("org/data", None)
    assert str(caught.value) == (
        "org/data: not a local file, and loading it from the hub failed "
        "(ConnectionError: Couldn't reach the hub); check the name and your connection")


def test_export_merge_misfit_is_one_line_cut_at_300(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import peft

    from engine import export, models
    from engine.adapters import AdapterInfo

    def from_pretrained(*_args, **_kwargs):
        raise RuntimeError("size mismatch " + "x" * 400 + "\nsecond line")

    monkeypatch.setattr(models, "load", lambda *_a, **_k: SimpleNamespace(model=object()))
    monkeypatch.setattr(peft.PeftModel, "from_pretrained", from_pretrained)
    adapter = AdapterInfo(ref="folder", path=Path(tmp_path / "adapter"), kind="folder")
    with pytest.raises(TunedeckError) as caught:
        export.export_merged(adapter, tmp_path / "out", base="base-model")
    first = ("size mismatch " + "x" * 400)[:300]
    assert str(caught.value) == (
        f"{adapter.label} does not fit base-model: RuntimeError: {first}. "
        "Name the model it was trained on with --base.")

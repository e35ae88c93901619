"""The shape of the code: no import circles (imports inside functions included), modules of about
500 lines at most, and training methods chosen from one recipe table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "tui", "cli")
MAX_LINES = 520  # "about 500": a module past this holds two things


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")[: None if is_package else -1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
                # Importing a.b.c first runs a/__init__ and a/b/__init__: those are edges too.
                parts = target.split(".")
                for i in range(1, len(parts)):
                    package = ".".join(parts[:i])
                    if package in modules and not name.startswith(package + ".") \
                            and package != name:
                        graph[name].add(package)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_anywhere():
    assert _cycles(_graph()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_every_module_is_about_500_lines_at_most():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_method_has_one_recipe_and_unknown_ones_name_the_choices():
    from engine.errors import ConfigError
    from engine.training import config, recipes

    assert tuple(recipes.RECIPES) == config.METHODS
    assert recipes.family_methods("preference") == config.PREFERENCE_METHODS
    assert recipes.family_methods("sft") == config.SFT_METHODS
    assert recipes.recipe_for("qlora") is recipes.recipe_for("lora") is recipes.SFT
    with pytest.raises(ConfigError, match="'ppo' is not a training method.*dpo, kto"):
        recipes.recipe_for("ppo")


def test_the_runner_and_preflight_run_the_recipe_the_table_names(monkeypatch, tmp_path):
    """A method family is one row: the runner's train and pre-flight go through the table."""
    from engine.training import preflight, recipes, runner
    from engine.training.config import TrainConfig
    from engine.training.rundir import RunDir

    calls = []
    fake = recipes.Recipe("fake", "a test family",
                          lambda cfg, progress: calls.append(("preflight", cfg.method)) or "report",
                          lambda run, flag, cfg: calls.append(("train", cfg.method)) or "done")
    monkeypatch.setitem(recipes.RECIPES, "dpo", fake)
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    cfg = TrainConfig(method="dpo", dataset=str(data))
    assert preflight.preflight(cfg) == "report"
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_text(cfg.to_yaml())
    assert runner.train(run, None) == "done"
    assert calls == [("preflight", "dpo"), ("train", "dpo")]


def test_per_method_defaults_live_once_and_the_docs_table_is_theirs(tmp_path):
    import re

    from engine.training import config, method_defaults
    from engine.training.config import TrainConfig

    assert set(method_defaults.LEARNING_RATE) == set(config.METHODS)
    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("<!-- method-defaults -->")[1].split("<!-- /method-defaults -->")[0]
    rows = re.findall(r"\| `(\w+)` \| ([\d.e-]+) \| ([\d.]+|—) \|", table)
    assert {m: float(lr) for m, lr, _ in rows} == method_defaults.LEARNING_RATE
    assert {m: float(b) for m, _, b in rows if b != "—"} == method_defaults.BETA
    assert TrainConfig(method="grpo").beta == 0.04
    assert TrainConfig(method="dpo", beta=0.3).beta == 0.3
    # A config that does not say gets its method's; one that says keeps it.
    assert TrainConfig(method="dpo").learning_rate == 5e-6
    assert TrainConfig(method="full").learning_rate == 2e-5
    assert TrainConfig(method="lora", learning_rate=1e-3).learning_rate == 1e-3
    path = tmp_path / "kto.yaml"
    path.write_text("method: kto\ndataset: prefs.jsonl\n")
    assert TrainConfig.from_yaml(path).learning_rate == 5e-6


def test_every_setting_has_help_in_every_recipe():
    import dataclasses

    from engine.training import recipes, settings_help
    from engine.training.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(settings_help.COMMON) == names  # a new setting needs its line
    for method, recipe in recipes.RECIPES.items():
        assert set(recipe.settings) <= names, method  # no help for a setting that is not
        assert all(recipes.field_help(method, name) for name in names), method
    # The same setting, told per recipe where its meaning differs.
    assert "completions per device" in recipes.field_help("grpo", "batch_size")
    assert "KTO needs at least 2" in recipes.field_help("kto", "batch_size")
    assert recipes.field_help("lora", "batch_size") == settings_help.COMMON["batch_size"]
    assert recipes.field_help("grpo", "beta") != recipes.field_help("dpo", "beta")

"""The Train screen: the form, the pre-flight panel, launching; and the end-to-end run_test:
launch from the Train screen, watch the chart and a sample arrive, quit, the run goes on, a new
app reattaches and shows the whole history."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.widgets import Input, Select

from engine.training.rundir import ACTIVE_STATES, list_runs
from tui.app import TunedeckApp


def make_dataset(folder: Path, n_train: int = 48, n_val: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tables = ["singer", "concert", "stadium", "album"]

    def row(i: int) -> str:
        table = tables[i % len(tables)]
        return json.dumps({"prompt": f"How many rows are in {table} number {i}?",
                           "completion": f"SELECT count(*) FROM {table} WHERE id = {i}"})

    (folder / "train.jsonl").write_text("\n".join(row(i) for i in range(n_train)) + "\n")
    (folder / "validation.jsonl").write_text(
        "\n".join(row(1000 + i) for i in range(n_val)) + "\n")
    return folder


def set_fields(screen, **values) -> None:
    for name, value in values.items():
        if name in ("method", "precision"):
            screen.query_one(f"#field-{name}", Select).value = value
        else:
            screen.query_one(f"#field-{name}", Input).value = str(value)


def field(screen, name: str) -> str:
    return screen.query_one(f"#field-{name}", Input).value


async def open_train(pilot):
    """F4, once its opening fit of the form to the data has finished."""
    await pilot.press("f4")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return pilot.app.screen


async def wait_for(pilot, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


def log_tail(run, lines: int = 15) -> str:
    try:
        return "\n".join(run.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no train.log)"


def fake_report(ok: bool = True):
    """A PreflightReport with made-up numbers (what the check itself would take seconds for)."""
    from engine.training.preflight_checks import PreflightReport

    return PreflightReport(
        ok=ok, errors=[] if ok else ["every label is masked: raise max_seq_len (now 8)"],
        warnings=["pad == eos: the EOS label is kept by the collator"],
        example_tokens=[("<|im_start|>", False), ("user", False), ("\n", False), ("Hi", False),
                        ("<|im_start|>", False), ("assistant", False), ("\n", False),
                        ("SELECT", True), (" 1", True), ("<|im_end|>", True)],
        trainable_params=4_884_480, total_params=139_400_000,
        memory_estimate_mb={"weights": 105.0, "optimizer": 39.0, "activations": 310.0,
                            "total": 454.0},
        steps=25, est_seconds=95.0, train_rows=200, eval_rows=20,
    )


async def test_form_is_prefilled_with_defaults_fitted_to_the_data():
    from engine.training.config import TrainConfig
    from engine.training.suggest import suggest

    defaults = TrainConfig()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_train(pilot)
        assert field(screen, "model") == defaults.model
        assert field(screen, "dataset") == defaults.dataset
        assert field(screen, "lora_r") == str(defaults.lora_r)
        # The SQL sample has a shipped, measured recipe (configs/sql.yaml): the form starts there.
        assert screen.query_one("#field-method", Select).value == "auto" != defaults.method
        assert screen.query_one("#field-precision", Select).value == "auto"
        fitted = suggest(defaults)
        assert screen.form_config() == fitted.config
        assert fitted.config.template == "text-to-sql-tuned"
        assert fitted.config.max_seq_len > defaults.max_seq_len
        assert field(screen, "max_seq_len") == str(fitted.config.max_seq_len)
        assert field(screen, "epochs") == "3"
        panel = str(screen.query_one("#preflight-report").render())
        assert f"Fitted to {defaults.dataset} ({fitted.rows:,} training rows)" in panel
        assert "the shipped recipe sql.yaml" in panel and "no EOS is cut" in panel


async def test_a_new_dataset_refits_the_fields_not_edited(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=48)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_train(pilot)
        set_fields(screen, eval_every=7)  # the user's own choice
        box = screen.query_one("#field-dataset", Input)
        box.value = str(data)
        box.focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        # 48 rows, batch 8, 3 epochs: 18 steps
        assert field(screen, "epochs") == "3" and field(screen, "max_seq_len") == "64"
        assert field(screen, "sample_every") == "3" and field(screen, "save_every") == "4"
        assert field(screen, "eval_every") == "7"
        panel = str(screen.query_one("#preflight-report").render())
        assert "Fitted to" in panel and "(48 training rows)" in panel
        assert "Kept your eval every" in panel
        await pilot.press("ctrl+g")  # asked for: every field is fitted
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert field(screen, "eval_every") == "1"
        set_fields(screen, precision="fp32")
        assert screen.form_config().precision == "fp32"


async def test_a_dataset_that_cannot_be_read_leaves_the_form_as_it_is(tmp_path):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_train(pilot)
        before = screen.form_config()
        box = screen.query_one("#field-dataset", Input)
        box.value = str(tmp_path / "missing")
        box.focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert str(screen.query_one("#preflight-status").render()).startswith(
            "Could not fit the settings")
        assert "does not exist" in str(screen.query_one("#preflight-report").render())
        after = screen.form_config()
        assert after.dataset == str(tmp_path / "missing")
        after.dataset = before.dataset
        assert after == before


async def test_choosing_an_example_config_fills_the_form(tmp_path, monkeypatch):
    import engine.training.config as config_module

    example = tmp_path / "sql-lora.yaml"
    example.write_text("method: lora\nlora_r: 8\nmax_steps: 20\nname: sql\n"
                       "mapping: {question: prompt}\n")
    monkeypatch.setattr(config_module, "example_configs", lambda: [example])
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#example", Select).focus()
        await pilot.press("enter", "down", "enter")  # open, skip "defaults", choose the example
        await pilot.pause()
        assert screen.query_one("#field-method", Select).value == "lora"
        assert field(screen, "lora_r") == "8" and field(screen, "max_steps") == "20"
        assert field(screen, "name") == "sql"
        config = screen.form_config()
        assert config.mapping == {"question": "prompt"}  # kept although not in the form


async def test_a_bad_number_is_named_and_nothing_starts():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        box = screen.query_one("#field-lora_r", Input)
        box.value = ""
        box.focus()
        await pilot.press("a", "b", "c", "ctrl+t")
        await pilot.pause()
        report = str(screen.query_one("#preflight-report").render())
        assert "LoRA r (lora_r): 'abc' is not a whole number" in report
        assert not [w for w in app.workers if w.group == "train"]


async def test_failing_preflight_blocks_the_launch(monkeypatch):
    import engine.training.launch as launch_module
    import engine.training.preflight as preflight_module

    launched = []
    monkeypatch.setattr(preflight_module, "preflight", lambda config, progress=None:
                        fake_report(ok=False))
    monkeypatch.setattr(launch_module, "launch",
                        lambda config, check=True, **_: launched.append((config, check)))
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4", "ctrl+l")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert launched == []
        assert type(screen).__name__ == "TrainScreen"
        report = str(screen.query_one("#preflight-report").render())
        assert "1 problem(s), not launchable" in report and "every label is masked" in report


async def test_a_crashing_preflight_is_shown_not_raised(monkeypatch):
    import engine.training.preflight as preflight_module

    def boom(config, progress=None):
        raise RuntimeError("tokenizer exploded")

    monkeypatch.setattr(preflight_module, "preflight", boom)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4", "ctrl+t")
        await app.workers.wait_for_complete()
        await pilot.pause()
        report = str(app.screen.query_one("#preflight-report").render())
        assert "RuntimeError: tokenizer exploded" in report


@pytest.mark.slow
async def test_real_preflight_on_the_tiny_model(tiny_model_dir, tmp_path):
    data = make_dataset(tmp_path / "data")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        set_fields(screen, model=tiny_model_dir, dataset=data, method="lora", max_steps=10,
                   batch_size=4, max_seq_len=64)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: screen.report is not None, 120, "the pre-flight report")
        assert screen.report.ok, screen.report.errors
        report = str(screen.query_one("#preflight-report").render())
        assert "Pre-flight OK" in report and "SELECT" in report
        assert f"{screen.report.train_rows:,} train" in report
        trained = "".join(t for t, on in screen.report.example_tokens if on)
        assert "SELECT count(*) FROM" in trained
        assert "processes 1; global batch 4 = 4 per device x 1 process" in report

        # Two processes through the shipped DDP config: the global batch doubles, the check
        # says so; FSDP shards over GPUs only, and the check refuses it here with the fix.
        screen.query_one("#launch-config", Select).value = "ddp"
        screen.query_one("#launch-processes", Input).value = "2"
        screen.report = None
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: screen.report is not None, 120, "the DDP pre-flight")
        report = str(screen.query_one("#preflight-report").render())
        assert screen.report.ok, screen.report.errors
        assert "processes 2 (accelerate, config ddp" in report
        assert "global batch 8 = 4 per device x 2 processes" in report
        screen.query_one("#launch-config", Select).value = "fsdp"
        screen.report = None
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: screen.report is not None, 120, "the FSDP pre-flight")
        assert not screen.report.ok
        assert any("FSDP" in e for e in screen.report.errors), screen.report.errors
        screen.query_one("#launch-config", Select).value = ""
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert "several processes start through accelerate" in str(
            screen.query_one("#preflight-report").render())


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_run_from_train_screen_survives_the_app_and_reattaches(tiny_model_dir, tmp_path):
    from tui.screens.run_view import RunViewScreen

    data = make_dataset(tmp_path / "data")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        set_fields(app.screen, name="e2e", model=tiny_model_dir, dataset=data, method="lora",
                   max_steps=30, batch_size=4, max_seq_len=64, eval_every=10, sample_every=10,
                   save_every=0)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, RunViewScreen), 120,
                       "the live view after launch")
        view = app.screen.view
        run = view.run
        await wait_for(pilot, lambda: (view.chart.curves and view.samples.samples)
                       or not run.is_active(), 240, "a loss point and a sample on screen")
        assert run.is_active(), f"the runner ended early:\n{log_tail(run)}"
        assert view.chart.curves[0].xs, "the chart shows train loss"
        assert view.samples.samples[0]["step"] == 10
        assert run.is_active() and view.history.step < 30, "the run is still going at quit"
        await pilot.press("ctrl+q")
    quit_at = time.time()

    # the app is gone; the runner is not
    deadline = time.monotonic() + 240
    while run.is_active() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run.state() == "done", f"{run.read_status().get('error')}\n{log_tail(run)}"
    events = run.read_events()
    logs = [e for e in events if e["type"] == "log"]
    samples = [e for e in events if e["type"] == "sample"]
    assert any(e["t"] > quit_at for e in logs), "training went on after the app quit"
    assert logs[-1]["step"] == 30

    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        assert [r.id for r in list_runs()] == [run.id]
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RunViewScreen)
        view = app.screen.view
        assert view.chart.curves[0].xs == [e["step"] for e in logs]
        assert len(view.samples.samples) == len(samples)
        line = str(app.screen.query_one("#run-progress-line").render())
        assert line.startswith("done · step 30/30")
        assert view.history.state not in ACTIVE_STATES


def test_snapshot_train_screen(snap_compare):
    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24),
                        run_before=open_train)


def test_snapshot_train_screen_with_a_report(snap_compare):
    async def show_report(pilot):
        await open_train(pilot)
        pilot.app.screen.show_report(fake_report(ok=True))
        pilot.app.screen.set_status("Ctrl+L launches this config.")
        await pilot.pause()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(100, 30),
                        run_before=show_report)


async def test_a_launch_runs_the_preflight_once(monkeypatch):
    """Ctrl+L checks the form once; `launch` is then told not to check again."""
    import engine.training.launch as launch_module
    import engine.training.preflight as preflight_module

    checks, launched = [], []
    run = SimpleNamespace(id="20260101-000000-lora-abcd")
    monkeypatch.setattr(preflight_module, "preflight",
                        lambda config, progress=None: checks.append(config) or fake_report())
    monkeypatch.setattr(launch_module, "launch",
                        lambda config, check=True, **_: launched.append(check) or run)
    monkeypatch.setattr("tui.screens.train.remember_run", lambda run: "")
    monkeypatch.setattr("tui.screens.train.RunViewScreen", lambda run: _Blank())
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        await pilot.press("ctrl+l")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(checks) == 1 and launched == [False]


async def test_a_config_with_a_method_the_form_lacks_is_an_error_naming_the_choices():
    from engine.training.config import TrainConfig

    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        screen = app.screen
        screen.fill(TrainConfig(method="sft"))
        await pilot.pause()
        report = str(screen.query_one("#preflight-report").render())
        assert "method: 'sft' is not one the Train form trains" in report
        assert "auto, full, lora, qlora, dora" in report


def _Blank():
    from textual.screen import Screen

    return Screen()


async def test_the_focused_setting_says_what_it_means_for_the_method():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_train(pilot)
        box = screen.query_one("#field-help")
        assert not box.display  # nothing focused in the form yet
        screen.query_one("#field-batch_size", Input).focus()
        await pilot.pause()
        assert box.display
        assert str(box.render()).startswith("batch size — rows per device per step")
        await pilot.press("tab")  # the next field: its own line
        assert str(box.render()).startswith("max seq len — tokens per row at most")
        await pilot.press("shift+tab")
        # The meaning follows the method: the form trains SFT methods only, so the recipe's
        # own line is checked through the table the form asks.
        from engine.training.recipes import field_help

        assert field_help("grpo", "batch_size") != field_help("qlora", "batch_size")
        assert field_help("qlora", "batch_size") in str(box.render())

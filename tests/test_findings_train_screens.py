"""The new-user walk's findings on the Train screen and the live run view (1, 2, 3, 11, 13), with
real keys through `run_test` against run directories written by hand, as a runner writes them."""

from __future__ import annotations

import json
import os
import time

import pytest
from textual.widgets import Input, Select

from engine import paths
from engine.training.rundir import RunDir
from tui.app import TunedeckApp

T0 = 1764403200.0


def fake_run(run_id: str, *, state: str = "running", step: int = 4, total: int = 8,
             config: str = "model: smollm2-135m-instruct\nmethod: lora\n", **status) -> RunDir:
    run = RunDir(paths.ensure_dir(paths.runs_dir() / run_id))
    run.config_path.write_text(config, encoding="utf-8")
    pid = os.getpid() if state in ("starting", "running", "stopping") else None
    run.write_status(state, pid=pid, step=step, total_steps=total, started=T0,
                     model="smollm2-135m-instruct", method="lora", **status)
    run.append_event("state", state="running", t=T0)
    for s in range(1, step + 1):
        run.append_event("log", step=s, loss=2.0 / s, lr=2e-4, t=T0 + 2 * s)
    if state in ("done", "stopped"):
        run.append_event("state", state=state, t=T0 + 2 * step + 1)
    run.log_path.write_text("loading the model\n", encoding="utf-8")
    return run


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.1)


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def open_run_view(pilot):
    """F5, then Enter on the newest run."""
    await pilot.press("f5")
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause()
    from tui.screens.run_view import RunViewScreen

    assert isinstance(pilot.app.screen, RunViewScreen)
    return pilot.app.screen


def progress_line(screen) -> str:
    return str(screen.query_one("#run-progress-line").render())


# ---------------------------------------------------------------------- 1: evaluation shows
async def test_the_live_view_says_evaluating_n_of_n_with_its_eta():
    run = fake_run("20251129-090000-eval-a1b2", phase="evaluating", phase_done=24,
                   phase_total=72, phase_started=T0 + 10)
    status = run.read_status()
    status["updated"] = T0 + 40  # 24 rows in 30 s of the runner's clock
    run.status_path.write_text(json.dumps(status))
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_run_view(pilot)
        line = progress_line(screen)
        assert "running · step 4/8 · evaluating 24/72 rows · ETA 1m00s" in line
        status.update(phase_done=60, updated=T0 + 85)  # 60 rows in 75 s: 12 to go, 15 s
        run.status_path.write_text(json.dumps(status))
        await wait_for(pilot, lambda: "evaluating 60/72 rows · ETA 15s" in progress_line(screen))
        status.update(phase=None, phase_done=None, phase_total=None)
        run.status_path.write_text(json.dumps(status))
        await wait_for(pilot, lambda: "evaluating" not in progress_line(screen))
        assert "ETA" in progress_line(screen)


def test_the_run_eta_counts_the_evaluations_still_to_come():
    from tui.run_history import RunHistory

    run = fake_run("20251129-090000-eta-a1b2", step=2, config="eval_every: 2\n")
    run.append_event("eval", step=2, eval_loss=1.0, seconds=100.0, rows=72, t=T0 + 104)
    for s in (3, 4):  # 2 s a step, after the 100 s evaluation
        run.append_event("log", step=s, loss=1.0, t=T0 + 100 + 2 * s)
    history = RunHistory(run)
    history.poll()
    # 4 steps to go at 2 s, and the evaluations at steps 6 and 8 at 100 s each
    assert history.eta_seconds == pytest.approx(4 * 2 + 2 * 100)


# ---------------------------------------------------------------------- 3: the log pane
async def test_the_log_pane_follows_the_file_and_wraps_long_lines():
    from tui.widgets.log_tail import LogTail

    run = fake_run("20251129-090000-log-a1b2")
    run.log_path.write_text("".join(f"early line {i}\n" for i in range(30)), encoding="utf-8")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_run_view(pilot)
        log = screen.query_one(LogTail)
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y > 0  # at the end from the start
        long = "[17:02:11] evaluating: " + " ".join(f"word{i}" for i in range(40))
        with open(run.log_path, "a", encoding="utf-8") as f:
            f.write(long + "\n[17:02:12] stopped\n")
        await wait_for(pilot, lambda: log.lines and log.lines[-1] == "[17:02:12] stopped")
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y  # followed the new lines
        width = log.size.width - log.styles.scrollbar_size_vertical
        assert max(len(line) for line in log.lines) <= width < 40  # a narrow pane, nothing cut
        assert "".join(line.strip() for line in log.lines[-8:]).count("word39") == 1
        await pilot.press("o")  # the whole lower row for the log
        await pilot.pause()
        assert not screen.query_one("#run-samples").display or \
            screen.query_one("#run-samples").size.width == 0
        assert log.size.width > 70
        assert max(len(line) for line in log.lines) <= log.size.width
        assert log.lines[-1] == "[17:02:12] stopped"


async def test_save_now_says_which_checkpoint_and_confirms_it_was_written():
    run = fake_run("20251129-090000-save-a1b2", step=5,
                   config="model: m\nmethod: lora\nsave_every: 3\n")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_run_view(pilot)
        await pilot.press("c")
        await pilot.pause()
        assert run.save_now_path.exists()
        assert any("checkpoint-6 will be written at the end of step 6 (a regular checkpoint is "
                   "due there anyway)" in n for n in notes(app))
        # The runner takes the request and writes the checkpoint.
        run.save_now_path.unlink()
        (run.checkpoints_dir / "checkpoint-6").mkdir(parents=True)
        await wait_for(pilot, lambda: any("wrote checkpoint-6 (save now)" in n
                                          for n in notes(app)))


async def test_save_now_during_an_evaluation_says_it_comes_when_the_evaluation_ends():
    fake_run("20251129-090000-saveev-a1b2", step=4, phase="evaluating", phase_done=8,
             phase_total=72)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_run_view(pilot)
        await pilot.press("c")
        await pilot.pause()
        assert any("checkpoint-4 will be written when the evaluation in progress ends "
                   "(8/72 rows)" in n for n in notes(app))


# ---------------------------------------------------------------------- 13: resume of a done run
async def test_r_on_a_finished_run_says_plainly_it_cannot_be_resumed(monkeypatch):
    import engine.training.launch as launch

    called = []
    monkeypatch.setattr(launch, "resume", lambda run: called.append(run))
    run = fake_run("20251129-090000-done-a1b2", state="done", step=8)
    run.adapter_dir.mkdir()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_run_view(pilot)
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert called == []
        [note] = [n for n in app._notifications if "finished" in str(n.message)]
        assert note.severity == "information" and "failed" not in note.title.lower()
        assert "finished at step 8: a finished run cannot be resumed" in str(note.message)
        assert "Use its adapter" in str(note.message)


# ---------------------------------------------------------------------- 11: the Train form
def fake_report():
    from engine.training.preflight_checks import PreflightReport

    return PreflightReport(
        ok=True, errors=[], warnings=[], example_tokens=[], trainable_params=1, total_params=10,
        memory_estimate_mb={}, steps=126, est_seconds=95.0, train_rows=200, eval_rows=20)


async def open_train(pilot):
    await pilot.press("f4")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return pilot.app.screen


def panel(screen) -> str:
    return str(screen.query_one("#preflight-report").render())


async def test_choosing_an_example_replaces_a_stale_report_and_names_its_limit(
        tmp_path, monkeypatch):
    import engine.training.config as config_module

    example = tmp_path / "sql-qlora.yaml"
    example.write_text("method: lora\nepochs: 1\nlimit: 80\nname: sql\n")
    monkeypatch.setattr(config_module, "example_configs", lambda: [example])
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_train(pilot)
        screen.show_report(fake_report())
        assert "126" in panel(screen)
        screen.query_one("#example", Select).focus()
        await pilot.press("enter", "down", "enter")
        await pilot.pause()
        text = panel(screen)
        assert "126" not in text and "Pre-flight OK" not in text
        assert "Example sql-qlora" in text
        assert "limit 80: only the first 80 training rows are used" in text
        assert screen.query_one("#field-limit", Input).value == "80"
        assert screen.report is None


async def test_the_eval_rows_field_limits_the_evaluation_set():
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_train(pilot)
        assert screen.form_config().eval_limit is None  # blank: every row
        box = screen.query_one("#field-eval_limit", Input)
        box.focus()
        await pilot.press("1", "6")
        assert screen.form_config().eval_limit == 16
        await pilot.press("backspace", "backspace", "x", "ctrl+t")
        await pilot.pause()
        assert "eval rows (eval_limit): 'x' is not a whole number" in panel(screen)


async def test_ctrl_o_opens_the_last_run_launched_from_here_after_a_restart(monkeypatch):
    import engine.training.launch as launch_module
    import engine.training.preflight as preflight_module
    from tui.screens.run_view import RunViewScreen

    run = fake_run("20251129-090000-mine-a1b2", state="running")
    fake_run("20251129-100000-other-c3d4", state="done")  # newer, not launched from here
    monkeypatch.setattr(preflight_module, "preflight",
                        lambda config, progress=None: fake_report())
    monkeypatch.setattr(launch_module, "launch", lambda config, check=True, **_: run)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_train(pilot)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, RunViewScreen))
    app = TunedeckApp(load_model=False)  # a restart
    async with app.run_test(size=(80, 24)) as pilot:
        await open_train(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, RunViewScreen) and app.screen.run.id == run.id


@pytest.mark.parametrize("width, form, preflight", [(120, 48, 72), (80, 42, 38), (60, 30, 30)])
async def test_the_train_columns_share_the_width(width, form, preflight):
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(width, 24)) as pilot:
        screen = await open_train(pilot)
        assert screen.query_one("#train-form").region.width == form
        assert screen.query_one("#preflight").region.width == preflight

"""The Runs screen and the live run view, driven with real keys against run directories written by
hand (the same files a runner writes), so every state and event shape is under the test's control.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from engine import paths
from engine.training.rundir import RunDir
from tui.app import TunedeckApp

T0 = 1764403200.0  # 2025-11-29 08:00 UTC: fixed, so snapshots do not move


def fake_run(run_id: str, steps: int = 30, total: int = 60, state: str = "done",
             pid: int | None = None, sample_every: int = 10, error: str | None = None) -> RunDir:
    run = RunDir(paths.ensure_dir(paths.runs_dir() / run_id))
    run.config_path.write_text("model: smollm2-135m-instruct\nmethod: qlora\n", encoding="utf-8")
    run.write_status(state, pid=pid, total_steps=total, step=steps, started=T0,
                     model="smollm2-135m-instruct", method="qlora", error=error)
    run.append_event("state", state="running", t=T0)
    for step in range(1, steps + 1):
        add_log(run, step, total)
        if step % 10 == 0:
            run.append_event("eval", step=step, eval_loss=1.5 * math.exp(-step / 20) + 0.6,
                             t=T0 + 2 * step)
        if sample_every and step % sample_every == 0:
            add_sample(run, step)
    if state in ("done", "stopped", "failed"):
        run.append_event("state", state=state, t=T0 + 2 * steps + 1,
                         **({"error": error} if error else {}))
    run.log_path.write_text("loading the model\nstep 10\nstep 20\n", encoding="utf-8")
    return run


def add_log(run: RunDir, step: int, total: int = 60) -> None:
    run.append_event("log", step=step, epoch=step / total,
                     loss=2.0 * math.exp(-step / 15) + 0.4 + 0.05 * math.sin(step), lr=2e-4,
                     grad_norm=1.0, tokens_per_s=150.0, mem_mb=812.0, t=T0 + 2 * step)


def add_sample(run: RunDir, step: int) -> None:
    run.append_event("sample", step=step, prompt="How many singers are there?",
                     reference="SELECT count(*) FROM singer",
                     completion=f"SELECT count(*) FROM singer -- step {step}", t=T0 + 2 * step)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def three_runs() -> tuple[RunDir, RunDir, RunDir]:
    live = fake_run("20251129-090000-live-a1b2", steps=30, total=60, state="running",
                    pid=os.getpid())
    done = fake_run("20251129-080000-done-c3d4", steps=60, total=60, state="done")
    crashed = fake_run("20251129-070000-crash-e5f6", steps=12, total=60, state="running",
                       pid=dead_pid(), sample_every=0)
    return live, done, crashed


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.1)


def table_rows(screen) -> list[list[str]]:
    table = screen.table
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_runs_lists_every_run_with_its_state(utc):
    three_runs()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        rows = table_rows(app.screen)
        # newest first; a dead runner that never said so is shown as failed
        assert [r[1] for r in rows] == ["20251129-090000-live-a1b2", "20251129-080000-done-c3d4",
                                        "20251129-070000-crash-e5f6"]
        assert [r[2] for r in rows] == ["running", "done", "failed"]
        assert [r[3] for r in rows] == ["30/60", "60/60", "12/60"]
        assert rows[0][4] == f"{2.0 * math.exp(-30 / 15) + 0.4 + 0.05 * math.sin(30):.4f}"
        assert rows[0][5:] == ["qlora", "smollm2-135m-instruct", "11-29 08:00"]
        # the chart follows the highlighted run
        assert len(app.screen.chart.curves[0].xs) == 30
        await pilot.press("down")
        await pilot.pause()
        assert len(app.screen.chart.curves[0].xs) == 60


async def test_runs_screen_picks_up_new_runs_and_progress():
    live = fake_run("20251129-090000-live-a1b2", state="running", pid=os.getpid())
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        screen = app.screen
        assert screen.table.row_count == 1
        add_log(live, 31)
        fake_run("20251129-100000-new-0000", steps=3, state="running", pid=os.getpid())
        await wait_for(pilot, lambda: screen.table.row_count == 2)
        rows = table_rows(screen)
        assert rows[0][1] == "20251129-100000-new-0000"
        assert rows[1][3] == "31/60"
        assert screen.table.get_row_at(screen.table.cursor_row)[1] == "20251129-090000-live-a1b2"


async def test_open_reattaches_with_the_full_history_then_follows():
    live = fake_run("20251129-090000-live-a1b2", steps=30, total=60, state="running",
                    pid=os.getpid())
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        from tui.screens.run_view import RunViewScreen

        assert isinstance(app.screen, RunViewScreen)
        view = app.screen.view
        train, evals = view.chart.curves[0], view.chart.curves[1]
        assert train.xs == list(range(1, 31)) and evals.xs == [10, 20, 30]
        assert len(view.samples.samples) == 3
        line = str(app.screen.query_one("#run-progress-line").render())
        # 30 steps in 58 s of event time → 30 more take about a minute
        assert "step 30/60" in line and "ETA 1m00s" in line and "150 tok/s" in line

        add_log(live, 31)
        add_sample(live, 31)
        with open(live.events_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": "log", "step": 32, "loss": 0.5})[:20])  # half a line
        await wait_for(pilot, lambda: len(view.samples.samples) == 4)
        assert view.chart.curves[0].xs[-1] == 31
        assert "-- step 31" in view.samples.samples[-1]["completion"]

        await pilot.press("s")  # smoothing off: the raw points
        assert view.chart.curves[0].label == "train"
        await pilot.press("l")
        assert "lr" not in [c.label for c in view.chart.curves]
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "RunsScreen"


async def test_a_failed_run_shows_its_error():
    three_runs()
    fake_run("20251129-060000-oom-0000", steps=3, state="failed",
             error="CUDA out of memory: try batch_size=4 or method=qlora")
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5", "down", "down", "enter")  # the runner that died silently
        await pilot.pause()
        error = app.screen.query_one("#run-progress-error")
        assert error.display and "see train.log" in str(error.render())
        await pilot.press("escape", "down", "enter")
        await pilot.pause()
        error = app.screen.query_one("#run-progress-error")
        assert "CUDA out of memory: try batch_size=4" in str(error.render())
        line = str(app.screen.query_one("#run-progress-line").render())
        assert line.startswith("failed · step 3/60") and "ETA" not in line


@pytest.mark.parametrize("config, shown", [
    (b"model: from-config\nmethod: dora\n", ("from-config", "dora")),
    (b"model: \xff\xfe\n", ("?", "?")),  # not UTF-8
    (b"model: m\nstarted: 2024-02-30\n", ("?", "?")),  # an impossible date
    (None, ("?", "?")),  # no config.yaml
])
def test_run_history_reads_the_config_only_when_it_can(config, shown):
    from tui.screens.run_view import RunHistory

    run = RunDir(paths.ensure_dir(paths.runs_dir() / "20251129-050000-cfg-0000"))
    run.write_status("stopped")  # no model or method of its own: they come from config.yaml
    if config is not None:
        run.config_path.write_bytes(config)
    history = RunHistory(run)
    history.poll()
    assert (history.model, history.method) == shown


async def test_log_tail_shows_train_log_and_follows_it():
    live = fake_run("20251129-090000-live-a1b2", state="running", pid=os.getpid())
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(100, 30)) as pilot:
        from tui.screens.run_view import LogTail, RunViewScreen

        app.push_screen(RunViewScreen(live))
        await pilot.pause()
        log = app.screen.query_one(LogTail)
        assert list(log.lines) == ["loading the model", "step 10", "step 20"]
        with open(live.log_path, "a", encoding="utf-8") as f:
            f.write("step 30\nhalf")
        await wait_for(pilot, lambda: log.line_count == 4)
        assert log.lines[-1] == "step 30"


async def test_marking_two_runs_overlays_their_loss_curves():
    three_runs()
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5", "space", "down", "space")
        await pilot.pause()
        screen = app.screen
        assert screen.marked == ["20251129-090000-live-a1b2", "20251129-080000-done-c3d4"]
        assert [c.label for c in screen.chart.curves] == ["live-a1b2", "done-c3d4"]
        assert [len(c.xs) for c in screen.chart.curves] == [30, 60]
        assert table_rows(screen)[0][0] == "●"
        await pilot.press("up", "space")
        await pilot.pause()
        assert [c.label for c in screen.chart.curves] == ["done-c3d4"]


async def test_save_now_and_stop_keys_act_on_the_highlighted_run():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               start_new_session=True)
    try:
        from engine.training.rundir import process_start_time

        live = fake_run("20251129-090000-live-a1b2", state="running", pid=sleeper.pid)
        # `stop` signals only a process proven to be the runner: the pid and its start time.
        live.write_status("running", pid_start=process_start_time(sleeper.pid))
        app = TunedeckApp(load_model=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("f5", "c")
            await pilot.pause()
            assert live.save_now_path.exists()
            await pilot.press("x")
            await app.workers.wait_for_complete()
            assert sleeper.wait(timeout=10) == -15  # SIGTERM reached the runner
            assert live.read_status()["state"] == "stopping"
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_resume_key_and_a_failing_resume_is_shown_not_raised(monkeypatch):
    import engine.training.launch as launch

    stopped = fake_run("20251129-090000-stopped-a1b2", state="stopped")
    calls = []

    def fake_resume(run):
        calls.append(run.id)
        raise RuntimeError("no checkpoint-30 here")

    monkeypatch.setattr(launch, "resume", fake_resume)
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5", "r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert calls == [stopped.id]
        assert type(app.screen).__name__ == "RunsScreen"
        notes = [str(n.message) for n in app._notifications]
        assert any("no checkpoint-30 here" in n for n in notes)


async def test_resume_is_refused_on_a_live_run(monkeypatch):
    import engine.training.launch as launch

    fake_run("20251129-090000-live-a1b2", state="running", pid=os.getpid())
    calls = []
    monkeypatch.setattr(launch, "resume", lambda run: calls.append(run))
    app = TunedeckApp(load_model=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f5", "r")
        await app.workers.wait_for_complete()
        assert calls == []
        assert any("still running" in str(n.message) for n in app._notifications)


def test_snapshot_runs_screen(snap_compare, utc):
    three_runs()
    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24), press=["f5"])


def test_snapshot_run_view(snap_compare, utc):
    three_runs()

    async def open_run(pilot):
        await pilot.press("f5", "enter")
        await pilot.pause()
        # The rating bar records the newest sample in a worker: shoot what it settles on.
        await pilot.app.workers.wait_for_complete()

    assert snap_compare(TunedeckApp(load_model=False), terminal_size=(80, 24),
                        run_before=open_run)

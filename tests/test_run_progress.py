"""The live view's progress line, including a preference run's implicit rewards."""

from __future__ import annotations

from engine import paths
from engine.training.rundir import RunDir
from tui.screens.run_view import RunHistory
from tui.widgets.run_progress import progress_line


def _run(tmp_name: str) -> RunDir:
    run = RunDir(paths.ensure_dir(paths.runs_dir() / tmp_name))
    run.config_path.write_text("model: tiny\nmethod: dpo\n")
    run.write_status("done", total_steps=4, step=4, model="tiny", method="dpo")
    return run


def test_dpo_rewards_appear_in_the_progress_line():
    run = _run("dpo-run")
    for step in range(1, 5):
        run.append_event("log", step=step, epoch=step / 4, loss=0.69 - 0.05 * step, lr=1e-4,
                         **{"rewards/chosen": 0.01 * step, "rewards/rejected": -0.02 * step,
                            "rewards/margins": 0.03 * step, "rewards/accuracies": 0.25 * step})
    history = RunHistory(run)
    history.poll()
    line = progress_line(history)
    assert "step 4/4" in line
    assert "chosen +0.040" in line and "rejected -0.080" in line
    assert "margin +0.120" in line and "acc 1.00" in line


def test_sft_run_shows_no_reward_fields():
    run = _run("sft-run")
    run.append_event("log", step=1, epoch=0.25, loss=2.0, lr=1e-4)
    history = RunHistory(run)
    history.poll()
    line = progress_line(history)
    assert "loss 2.0000" in line and "margin" not in line and "acc" not in line

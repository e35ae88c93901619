"""Real multi-process training: `tunedeck train --accelerate-config ddp --num-processes 2` on the
CPU (DDP over gloo, through torchrun under `accelerate launch`), on the tiny model.

One run lives through what a multi-process run must survive (the module's `story`: three
launches of two processes each, about a minute on two cores): `tunedeck stop` → one checkpoint
→ `tunedeck resume`, with rank 1 made to die at a step (TUNEDECK_FAIL_AT, through the real
failure path) → failed with rank 1's error → `tunedeck resume` → done. Every process of it runs
with an audit hook (tests/fixtures/write_audit) that records what it writes. The tests read what
the run left behind, and compare its losses with one process trained on the same global batch.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from pathlib import Path

import pytest

from cli.main import main
from engine.training.rundir import RunDir, list_runs, same_process

SENTIMENT = Path(__file__).resolve().parents[1] / "sample_data" / "sentiment"
AUDIT_HOOK = Path(__file__).resolve().parent / "fixtures" / "write_audit"
MAX_STEPS = 6

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _config(folder: Path, model_dir: Path) -> Path:
    # fp32 and no dropout: the two runs compared below differ only in how the batch is split.
    lines = {"model": str(model_dir), "dataset": str(SENTIMENT), "method": "lora", "limit": 24,
             "batch_size": 2, "max_seq_len": 96, "max_steps": MAX_STEPS, "save_every": 0,
             "eval_every": 0, "learning_rate": 0.003, "lora_dropout": 0.0, "precision": "fp32",
             "seed": 3, "tensorboard": True}
    path = folder / "two.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def _logs(run: RunDir) -> list[dict]:
    return [e for e in run.read_events() if e["type"] == "log"]


def _wait(predicate, timeout: float, what: str, run: RunDir) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{run.log_path.read_text()[-4000:]}")


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def _ended(run: RunDir, timeout: float) -> float:
    """Waits for the run's state to be final and its accelerate launcher (torchrun's agent,
    which waits for every rank) to have exited; the seconds it took."""
    def launcher_gone() -> bool:
        status = run.read_status()
        return not same_process(status.get("launcher_pid"), status.get("launcher_pid_start"))

    return _wait(lambda: run.read_status().get("pid") and not run.is_active()
                 and launcher_gone(), timeout, "every process of the launch to end", run)


@pytest.fixture(scope="module")
def story(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("multiprocess")
    home, audit = root / "home", root / "audit"
    (home / "runs").mkdir(parents=True)
    audit.mkdir()
    mp = pytest.MonkeyPatch()
    seen: dict = {"audit": audit}
    run = None
    try:
        mp.setenv("TUNEDECK_HOME", str(home))
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(AUDIT_HOOK),
                                                               os.environ.get("PYTHONPATH")])))
        mp.setenv("TUNEDECK_AUDIT_ROOT", str(home / "runs"))
        mp.setenv("TUNEDECK_AUDIT_OUT", str(audit))
        config = _config(root, tiny_model_dir)

        # 1. Two processes through the command line; stopped mid-run.
        mp.setenv("TUNEDECK_STEP_DELAY", "0.5")  # the tiny model is too quick to catch
        code, seen["train_out"] = _cli("train", str(config), "--accelerate-config", "ddp",
                                       "--num-processes", "2")
        assert code == 0, seen["train_out"]
        run = seen["run"] = list_runs()[0]
        _wait(lambda: _logs(run) and _logs(run)[-1]["step"] >= 2, 240, "step 2", run)
        seen["running_status"] = run.read_status()
        assert _cli("stop", run.id)[0] == 0
        _ended(run, 120)
        seen["stopped"] = run.read_status()
        seen["stopped_checkpoints"] = [p.name for p in run.checkpoints()]
        seen["stopped_files"] = sorted(p.name for p in run.checkpoints()[-1].iterdir())
        seen["stopped_at"] = stop = _logs(run)[-1]["step"]
        mp.delenv("TUNEDECK_STEP_DELAY")

        # 2. Resumed on two processes; rank 1 dies two steps on.
        mp.setenv("TUNEDECK_FAIL_AT", f"1:{stop + 2}")
        assert _cli("resume", run.id)[0] == 0
        seen["failed_after_s"] = _ended(run, 240)
        seen["failed"] = run.read_status()
        seen["failed_steps"] = [e["step"] for e in _logs(run)]
        seen["failed_checkpoints"] = [p.name for p in run.checkpoints()]
        seen["failed_notes"] = sorted(p.name for p in run.path.glob("failed-rank-*"))
        mp.delenv("TUNEDECK_FAIL_AT")

        # 3. Resumed again, to the end.
        assert _cli("resume", run.id)[0] == 0
        _ended(run, 240)
        seen["done"] = run.read_status()
        seen["losses"] = {e["step"]: e["loss"] for e in _logs(run)}
        seen["show_out"] = _cli("runs", "show", run.id)[1]

        # The same global batch (4 rows a step) on one process: batches of 4, cut from the same
        # length-sorted blocks (the sampler cuts them at the global batch).
        from in_process import run_in_process

        from engine.training import launch
        from engine.training.config import TrainConfig

        single = launch.create_run(TrainConfig.from_yaml(config).with_overrides(
            ["batch_size=4", "tensorboard=false"]))
        assert run_in_process(single) == 0, single.log_path.read_text()[-3000:]
        seen["single_losses"] = {e["step"]: e["loss"] for e in _logs(single)}
        yield seen
    finally:
        if run is not None:  # nothing of a broken story may outlive the tests
            status = run.read_status()
            for pid, start in ((status.get("launcher_pid"), status.get("launcher_pid_start")),
                               (status.get("pid"), status.get("pid_start"))):
                if same_process(pid, start):
                    with contextlib.suppress(OSError):
                        os.killpg(os.getpgid(pid), signal.SIGKILL)
        mp.undo()


def test_the_launch_reports_its_processes_and_global_batch(story):
    batch = "global batch 4 = 2 per device x 2 processes x 1 accumulation step"
    out = " ".join(story["train_out"].split())  # rich wraps long lines
    assert f"Processes: 2; {batch}" in out and "--num_processes 2" in out
    status, run = story["running_status"], story["run"]
    assert status["world_size"] == 2 and status["global_batch"] == 4
    assert status["launch"]["accelerate_config"].endswith("configs/accelerate/ddp.yaml")
    log = run.log_path.read_text()
    assert f"processes: 2; {batch}" in log
    assert log.count("--config_file") == 3 and log.count("--num_processes 2") == 3


def test_stop_reaches_every_rank_and_writes_one_checkpoint(story):
    stop = story["stopped_at"]
    assert story["stopped"]["state"] == "stopped" and 2 <= stop < MAX_STEPS
    assert story["stopped_checkpoints"] == [f"checkpoint-{stop}"]
    # Both ranks saved at the same step: each one's RNG state is in the one folder.
    assert {"rng_state_0.pth", "rng_state_1.pth", "checkpoint-complete.json",
            "adapter_model.safetensors", "optimizer.pt"} <= set(story["stopped_files"])


def test_a_rank_that_dies_fails_the_run_with_its_error(story):
    stop, failed = story["stopped_at"], story["failed"]
    assert failed["state"] == "failed"
    assert failed["error"].startswith(
        f"rank 1 failed: RuntimeError: injected failure on rank 1 at step {stop + 2}")
    assert story["failed_after_s"] < 120  # ended, not hung until a collective's timeout
    # The resumed run trained on two processes until then; its checkpoint is untouched.
    assert story["failed_steps"] == list(range(1, stop + 2))
    assert story["failed_checkpoints"] == [f"checkpoint-{stop}"]
    events = story["run"].read_events()
    assert any(e["type"] == "state" and e["state"] == "failed" and "rank 1" in e["error"]
               for e in events)
    # Rank 1's note, where a reader finds it even when rank 0 could not record it; the next
    # launch starts without it.
    assert story["failed_notes"] == ["failed-rank-1.json"]
    assert not list(story["run"].path.glob("failed-rank-*"))


def test_resume_continues_on_two_processes_to_the_end(story):
    done, run = story["done"], story["run"]
    assert done["state"] == "done" and done["step"] == MAX_STEPS and done["world_size"] == 2
    assert sorted(story["losses"]) == list(range(1, MAX_STEPS + 1))  # each step once
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert "2 processes, global batch 4" in story["show_out"]


def test_rank_zero_alone_writes_the_run_directory(story):
    run, audit = story["run"], story["audit"]
    writes: dict[str, set[str]] = {}
    pids: dict[str, set[int]] = {}
    for path in audit.glob("*.log"):
        rank, pid = path.stem.rsplit("-", 1)
        pids.setdefault(rank, set()).add(int(pid))
        for line in path.read_text().splitlines():
            event, name = line.split("\t")
            if name.startswith(run.id + "/"):
                writes.setdefault(rank, set()).add(f"{event} {name.removeprefix(run.id + '/')}")
    assert len(pids["0"]) == 3  # the hook ran in every launch's rank 0
    zero = {w.split(" ", 1)[1] for w in writes["0"]}
    assert {"status.json", "events.jsonl", "adapter", "runner.lock"} <= zero
    assert any(name.startswith("checkpoints/checkpoint-") for name in zero)
    # Rank 1 only asks for the checkpoint folder (the trainer's makedirs, exist_ok) before
    # torch.save writes its RNG state there, and leaves its failure note (written through a
    # temporary file); the launcher process writes nothing.
    others = {w for rank, found in writes.items() if rank != "0" for w in found}
    note = {w for w in others if "failed-rank-1.json" in w}
    assert "os.rename failed-rank-1.json" in note  # os.replace audits as os.rename
    assert others - note <= {f"os.mkdir checkpoints/checkpoint-{story['stopped_at']}"}, others
    # TensorBoard names its files after the writing process: rank 0's alone.
    tensorboard = [p.name for p in run.path.glob("events.out.tfevents.*")]
    assert tensorboard and all(int(name.rsplit(".", 2)[1]) in pids["0"] for name in tensorboard)


def test_losses_follow_one_process_with_the_same_global_batch(story):
    # DDP averages the two ranks' gradients over the same rows one process takes in one batch,
    # so the curves differ only by float rounding (~1e-7 relative seen here). 1e-4 relative is far
    # above that and far below what a step changes (~1e-3 relative): rows seen twice or missed,
    # or a wrongly scaled gradient, would miss it at once.
    multi, single = story["losses"], story["single_losses"]
    assert sorted(single) == sorted(multi)
    assert multi[MAX_STEPS] < multi[1] - 0.05  # it learns, so the comparison means something
    for step, loss in single.items():
        assert multi[step] == pytest.approx(loss, rel=1e-4), (step, multi, single)

"""TensorBoard event files: the run's events mirrored beside events.jsonl (scalars and sample
text), on by default when the package is installed, off with `tensorboard: false`."""

from __future__ import annotations

import pytest
from adapter_runs import make_run

from engine.training import tensorboard
from engine.training.config import TrainConfig


def test_mirror_writes_scalars_and_samples(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = make_run(tmp_path, name="tb", final=False)  # log + eval events at steps 10..40
    run.append_event("sample", step=40, prompt="Capital of France?", reference="Paris",
                     completion="Paris.\nIt is.")
    run.append_event("log", step=50, loss=0.5, lr=1e-5, grad_norm=0.2, **{"rewards/margins": 1.5})
    mirror = tensorboard.TensorBoardMirror(run, from_start=True)
    assert mirror.sync() > 0
    mirror.close()
    assert list(run.path.glob("events.out.tfevents.*"))  # beside events.jsonl

    events = EventAccumulator(str(run.path), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s",
            "eval/loss", "train/rewards/margins"} <= set(scalars)
    assert [e.step for e in events.Scalars("train/loss")] == [10, 20, 30, 40, 50]
    assert events.Scalars("train/loss")[-1].value == pytest.approx(0.5)
    assert [e.step for e in events.Scalars("eval/loss")] == [10, 20, 30, 40]
    (text,) = events.Tensors("samples/0/text_summary")
    body = text.tensor_proto.string_val[0].decode()
    assert "Capital of France?" in body and "Paris.\n    It is." in body


def test_resumed_run_mirrors_only_new_events(tmp_path):
    pytest.importorskip("tensorboard")
    run = make_run(tmp_path, name="tb-resume", final=False)
    mirror = tensorboard.TensorBoardMirror(run)  # a resume: what is there was mirrored before
    assert mirror.sync() == 0
    run.append_event("log", step=50, loss=0.5)
    assert mirror.sync() == 1
    mirror.close()


def test_on_by_default_off_by_config(tmp_path, monkeypatch):
    run = make_run(tmp_path, name="tb-off", final=False)
    config_file = tmp_path / "c.yaml"
    config_file.write_text("model: smollm2-135m-instruct\ntensorboard: false\n")
    assert TrainConfig().tensorboard is True
    off = TrainConfig.from_yaml(config_file)
    assert off.tensorboard is False
    notes: list[str] = []
    assert tensorboard.callbacks(run, off, notes.append) == [] and notes == []

    # Without the package: no callback, and one line in train.log that says how to get it.
    monkeypatch.setattr(tensorboard, "available", lambda: False)
    assert tensorboard.callbacks(run, TrainConfig(), notes.append) == []
    assert len(notes) == 1 and "pip install tensorboard" in notes[0]
    if tensorboard.importlib.util.find_spec("tensorboard") is not None:
        monkeypatch.undo()
        (callback,) = tensorboard.callbacks(run, TrainConfig(), notes.append)
        callback.mirror.close()

"""Settings fitted to the model and dataset (engine.training.suggest)."""

from __future__ import annotations

import json

import pytest

from engine.errors import TunedeckError
from engine.training.config import TrainConfig
from engine.training.suggest import cadence, epochs_for, length_limit, suggest


def test_length_limit_covers_99_percent_rounded_up_within_the_context():
    lengths = list(range(1, 101))  # the 99th percentile is 99
    assert length_limit(lengths, 4096) == (128, 99)
    assert length_limit([10, 12], 4096) == (64, 12)  # never below one step
    assert length_limit([3000] * 10, 2048) == (2048, 3000)  # capped by the context


def test_epochs_and_cadence_follow_the_size():
    assert [epochs_for(n) for n in (50, 1000, 1001, 10000, 10001)] == [3, 3, 2, 2, 1]
    assert cadence(126, has_eval=True) == (12, 25, 31)
    assert cadence(3, has_eval=False) == (0, 1, 1)


def test_suggest_measures_the_rows_with_the_models_tokenizer(tmp_path, default_model_dir):
    data = tmp_path / "data"
    data.mkdir()
    long_answer = " ".join(["word"] * 150)
    rows = [{"prompt": f"Question {i}?", "completion": "short" if i % 10 else long_answer}
            for i in range(40)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    # The form's LoRA rate, kept when the method was switched to full: refitted, with the reason.
    config = TrainConfig(model=str(default_model_dir), dataset=str(data), method="full",
                         max_seq_len=32, eval_every=5, batch_size=64, learning_rate=2e-4)
    fitted = suggest(config)
    assert fitted.rows == 40
    # 4 of 40 rows are long: the limit must cover them, not just the median row.
    assert fitted.config.max_seq_len >= 150
    assert fitted.config.batch_size == 40  # no bigger than the data
    assert fitted.steps == 3 and fitted.config.epochs == 3
    assert fitted.config.eval_every == 0  # no validation split: nothing to evaluate on
    assert fitted.config.learning_rate == pytest.approx(2e-5)  # full fine-tune
    assert any("learning rate" in r for r in fitted.reasons)
    assert fitted.config.dataset == str(data) and fitted.config.method == "full"


def test_suggest_names_a_missing_dataset(tmp_path):
    with pytest.raises(TunedeckError, match="does not exist"):
        suggest(TrainConfig(dataset=str(tmp_path / "nope")))

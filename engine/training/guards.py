"""What keeps a run from ending with a wrong result reported as success.

- `DivergenceGuard`: a NaN or infinite loss or gradient norm stops the run at that step. Nothing
  is saved from then on (the weights are already poisoned by that step's update), so the last
  checkpoint written before it stays the newest, and the runner ends "failed" instead of saving
  a NaN adapter.
- `guard_checkpoints`: every trainer checkpoint gets a completion marker once all its files are
  written, so one cut short (disk full, killed mid-save) is never taken as the newest; a disk
  that fills during the save is reported by name ("disk full while writing checkpoint-40").

Every recipe (SFT, DPO, KTO) goes through both: `shared.run_trainer` installs them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from engine.errors import TunedeckError
from engine.training.rundir import mark_checkpoint_complete, write_failure

WATCHED = ("loss", "grad_norm")


class TrainingDiverged(TunedeckError):
    """The loss or the gradient norm stopped being a finite number."""


class DivergenceGuard(TrainerCallback):
    """Stops training at the first logged step whose loss or gradient norm is NaN or infinite.
    It runs after the events callback, so that step is still logged as it is (NaN stays NaN)."""

    def __init__(self) -> None:
        self.diverged: tuple[int, str, float] | None = None  # (step, what, value)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if self.diverged is not None:
            return
        for key in WATCHED:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self.diverged = (state.global_step, key, float(value))
                break
        if self.diverged is not None:
            # The trainer saves and evaluates right after logging; neither must see these weights.
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False

    def error(self, config: Any, last_good: Path | None) -> TrainingDiverged:
        step, what, value = self.diverged or (0, "loss", math.nan)
        name = "loss" if what == "loss" else "gradient norm"
        kept = (f"The last good checkpoint, {last_good.name}, is kept; resume from it once "
                "config.yaml is fixed" if last_good is not None
                else "No checkpoint was written before it; start the run again once it is fixed")
        return TrainingDiverged(
            f"training diverged: the {name} became {_show(value)} at step {step}. Lower the "
            f"learning rate (learning_rate is {config.learning_rate:g}) or check the data for "
            f"broken rows. {kept}. No adapter was saved from the diverged weights.")


def _show(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def guard_checkpoints(trainer: Any, guard: DivergenceGuard | None = None) -> None:
    """Wrap the trainer's checkpoint save: skipped once the run diverged, a completion marker
    when every file is written, and an OSError named after the checkpoint it cut."""
    save = trainer._save_checkpoint

    def guarded(model: Any, trial: Any) -> None:
        if guard is not None and guard.diverged is not None:
            return
        step = trainer.state.global_step
        name = f"checkpoint-{step}"
        try:
            save(model, trial)
            if trainer.args.world_size > 1:
                # Every rank writes its own RNG state into the folder: complete once all have.
                trainer.accelerator.wait_for_everyone()
            if trainer.args.should_save:  # the main process writes; the others only wait
                folder = Path(trainer._get_output_dir(trial=trial)) / name
                mark_checkpoint_complete(folder, step)
        except OSError as err:
            raise write_failure(err, name) from err

    trainer._save_checkpoint = guarded

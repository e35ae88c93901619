"""Training throughput, measured the same way for our SFT path and for a plain
`transformers.Trainer` + PEFT: real (non-padding) tokens per second over the steps after the
first (the first compiles kernels and warms caches), the padding, and the peak accelerator memory.

`measure` runs one side on a run config's own model, data, batch and trainer arguments, for
`tunedeck gpu-check`; `Meter`, `pad_collator` and `timer_callback` are the pieces
`bench/train_throughput.py` builds its fixed CPU variants from.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError

KINDS = ("baseline", "ours")


def pad_collator(pad_id: int) -> Any:
    """Right padding to the longest row of the batch: what a plain `Trainer` user writes."""
    import torch

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


class Meter:
    """Wraps a collator: counts real and padded tokens per batch, and the positions each path
    runs through the decoder body and the LM head.

    A batch counts when its step ends (`consume`), not when it is collated: the data loader
    fetches one batch ahead, so counting at collation would credit the timed steps with the
    batch after them instead of their own, a skew that length-sorted batches make large."""

    def __init__(self, collate: Any, fast: bool):
        self.collate = collate
        self.fast = fast
        self.tokens = self.padded = 0
        self.timed_tokens = self.body_positions = self.head_positions = 0
        self.pending: collections.deque[tuple[int, int, int, int]] = collections.deque()

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from engine.training.batching import shared_prefix_length

        batch = self.collate(rows)
        mask = batch.get("attention_mask")
        real = int(mask.sum()) if mask is not None else int(batch["real_tokens"])  # packed
        rows_n, width = batch["input_ids"].shape
        if self.fast:
            keep = batch["labels"][:, 1:] != -100
            prefix = shared_prefix_length(batch, keep)
            body, head = rows_n * width - (rows_n - 1) * prefix, int(keep.sum())
        else:
            body = head = rows_n * width
        self.pending.append((real, batch["input_ids"].numel(), body, head))
        return batch

    def consume(self, batches: int, timed: bool) -> None:
        """The step that just ended trained the oldest `batches` collated batches."""
        for _ in range(min(batches, len(self.pending))):
            real, padded, body, head = self.pending.popleft()
            self.tokens += real
            self.padded += padded
            if timed:
                self.timed_tokens += real
                self.body_positions += body
                self.head_positions += head


def timer_callback(meter: Meter) -> Any:
    """Times from the end of step 1 to the end of the last step and tells the meter which
    batches each step trained. On CUDA it waits for the queued kernels at each mark, so the time
    is the GPU's, not the launch queue's."""
    from transformers import TrainerCallback

    def now() -> float:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    class Timer(TrainerCallback):
        t0: float | None = None
        t1: float | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stamp = now()
            # Step 1 warms up (kernels, caches) and is not timed.
            meter.consume(args.gradient_accumulation_steps, timed=state.global_step > 1)
            if state.global_step == 1:
                self.t0 = stamp
            self.t1 = stamp

    return Timer()


@dataclass
class Throughput:
    kind: str  # "baseline" | "ours"
    tokens_per_s: float
    padding: float  # share of the batches' positions that were padding
    timed_steps: int
    seconds: float
    peak_mem_mb: float | None  # torch.cuda.max_memory_allocated; None off CUDA
    gradient_checkpointing: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v
                for k, v in dataclasses.asdict(self).items()}


def measure(kind: str, config: Any, steps: int, checkpointing: bool | None = None) -> Throughput:
    """Train `steps` steps of one side on `config`'s model (4-bit for QLoRA), data, LoRA, batch
    and trainer arguments, on the device the runner would use, and measure them.

    ours: the runner's own trainer (`sft.build_trainer`: length-sorted batches, the LM head at
    trained positions, the shared prompt prefix once where gradient checkpointing allows it).
    baseline: `transformers.Trainer` over `peft.get_peft_model`, 4-bit bases prepared with
    `prepare_model_for_kbit_training` as the PEFT docs do, its default sampler, right padding
    and the full LM head, with the same trainer arguments (precision, optimizer); pass
    `checkpointing` = ours' `gradient_checkpointing` so that both make the same memory-for-time
    trade. Peak memory counts from before the model loads, so it holds the weights, the
    activations and the optimizer state."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if steps < 2:
        raise ValueError("at least 2 steps: the first is warm-up and is not timed")
    import torch
    from transformers import PrinterCallback

    from engine.training.method_fit import fit_method
    from engine.training.shared import load_model

    config, _ = fit_method(config)  # `auto` → the method a run here would train with
    config = dataclasses.replace(config, max_steps=steps, save_every=0, eval_every=0,
                                 sample_every=0, tensorboard=False)
    torch.manual_seed(config.seed)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = loaded = None
    with tempfile.TemporaryDirectory(prefix="tunedeck-gpu-check-") as tmp, _quiet():
        try:
            loaded = load_model(config)
            if kind == "ours":
                trainer, meter, timer = _build_ours(config, loaded, Path(tmp))
            else:
                trainer, meter, timer = _build_baseline(config, loaded, Path(tmp), checkpointing)
            checkpointed = bool(trainer.args.gradient_checkpointing)
            # The trainer's own log lines would land between the check's table rows.
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        finally:
            # The next side must start from an empty GPU for its peak to be its own.
            trainer = loaded = None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    if timer.t0 is None or timer.t1 is None or timer.t1 <= timer.t0 or not meter.timed_tokens:
        raise TunedeckError(f"{kind}: no step after the first was timed ({steps} steps asked); "
                            "the trainer stopped early (see the log above)")
    elapsed = timer.t1 - timer.t0
    return Throughput(kind=kind, tokens_per_s=meter.timed_tokens / elapsed,
                      padding=1 - meter.tokens / max(1, meter.padded), timed_steps=steps - 1,
                      seconds=elapsed, peak_mem_mb=peak, gradient_checkpointing=checkpointed)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No deprecation chatter or per-map progress bars from the libraries while measuring, and
    the trainer's log lines on stderr with the progress: stdout holds the check's table."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    bars = not are_progress_bars_disabled()
    disable_progress_bars()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if bars:
            enable_progress_bars()


def _build_ours(config: Any, loaded: Any, tmp: Path) -> tuple[Any, Meter, Any]:
    from engine.training.rundir import RunDir
    from engine.training.sft import build_trainer

    trainer, _, _ = build_trainer(config, RunDir(tmp), loaded, callbacks=[])
    meter = Meter(trainer.data_collator, fast=True)
    trainer.data_collator = meter  # read when train() builds its data loader
    timer = timer_callback(meter)
    trainer.add_callback(timer)
    return trainer, meter, timer


def _build_baseline(config: Any, loaded: Any, tmp: Path,
                    checkpointing: bool | None) -> tuple[Any, Meter, Any]:
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments

    from engine.training import data as tdata
    from engine.training.shared import common_args, load_conversations, peft_config

    args = common_args(config, tmp, loaded.info.device, loaded.info.dtype)
    args.pop("max_length")  # an SFTConfig setting; a plain Trainer has none
    args["remove_unused_columns"] = False  # the collator makes the model's inputs
    if checkpointing is not None:
        args["gradient_checkpointing"] = checkpointing
    train_convs, _ = load_conversations(config)
    dataset, _ = tdata.build_dataset(loaded.tokenizer, train_convs, config.max_seq_len,
                                     config.completion_only_loss)
    model = loaded.model
    if config.quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=args["gradient_checkpointing"])
    elif args["gradient_checkpointing"]:
        model.enable_input_require_grads()  # checkpointed LoRA on a frozen base needs it
    model = get_peft_model(model, peft_config(config))
    meter = Meter(pad_collator(loaded.tokenizer.pad_token_id), fast=False)
    timer = timer_callback(meter)
    trainer = Trainer(model=model, args=TrainingArguments(**args), train_dataset=dataset,
                      data_collator=meter, callbacks=[timer])
    return trainer, meter, timer


def compare(baseline: Throughput, ours: Throughput) -> dict[str, Any]:
    """The two sides and their ratios (ours over baseline: speed up, memory down)."""
    out: dict[str, Any] = {"baseline": baseline.as_dict(), "ours": ours.as_dict(),
                           "speedup": round(ours.tokens_per_s / baseline.tokens_per_s, 3)
                           if baseline.tokens_per_s else None, "memory_ratio": None}
    if baseline.peak_mem_mb and ours.peak_mem_mb:
        out["memory_ratio"] = round(ours.peak_mem_mb / baseline.peak_mem_mb, 3)
    return out

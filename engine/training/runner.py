"""The training process: ``python -m engine.training RUN_DIR``.

It reads RUN_DIR/config.yaml, trains with the fast SFT trainer (TRL + PEFT + bitsandbytes) and
talks only through the run directory: status.json, events.jsonl, checkpoints/, adapter/. When
checkpoints exist it resumes from the newest (optimizer, scheduler and RNG included) and appends
to the same events file. SIGTERM → checkpoint → "stopped". Any failure → "failed" with the
error, and for out-of-memory with concrete advice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError
from engine.training.config import TrainConfig
from engine.training.rundir import RunDir, process_start_time

# Seconds a runner waits for the run's lock: `resume` holds it while it hands the run over.
LOCK_WAIT = 10.0

OOM_ADVICE = (
    "Out of memory. Try, in this order: a smaller batch_size with a larger grad_accum (same "
    "effective batch), method=qlora (4-bit weights), gradient checkpointing (on by default on "
    "CUDA), a shorter max_seq_len."
)


def is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, MemoryError) or "out of memory" in text or "outofmemory" in text \
        or "can't allocate memory" in text or "cannot allocate memory" in text


def optimizer_name(config: TrainConfig, device: str) -> str:
    if config.optimizer != "auto":
        return config.optimizer
    return "paged_adamw_8bit" if device == "cuda" else "adamw_torch"


def load_model(config: TrainConfig, progress: Any = None) -> Any:
    """The base model for the method: 4-bit for QLoRA, the device dtype otherwise."""
    from engine import models

    return models.load(config.model, quantize="4bit" if config.quantized else None,
                       quant_type=config.quant_type, double_quant=config.double_quant,
                       progress=progress)


def peft_config(config: TrainConfig) -> Any:
    if not config.uses_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.target_modules,
                      use_dora=config.method == "dora", bias="none", task_type="CAUSAL_LM")


def mixed_precision(config: TrainConfig, device: str, dtype_name: str) -> tuple[str, str]:
    """("bf16" | "fp16" | "fp32", why) for the training step. `auto` follows the device: CUDA
    its dtype; a CPU bf16 where its bf16 matmul is natively fast (weights and optimizer stay
    fp32, the matmuls run bf16: ~1.7x measured on AVX512-BF16), else fp32; MPS fp32."""
    if config.precision != "auto":
        return config.precision, "set in the config"
    if device == "cuda":
        chosen = {"bfloat16": "bf16", "float16": "fp16"}.get(dtype_name, "fp32")
        return chosen, f"the GPU's {dtype_name}"
    if device == "cpu":
        from engine import models

        speedup = models.cpu_bf16_speedup()
        if speedup >= models.CPU_BF16_MIN_SPEEDUP:
            return "bf16", f"this CPU's bf16 matmul is {speedup:.1f}x its fp32 one"
        return "fp32", f"bf16 is not fast on this CPU ({speedup:.2f}x fp32)"
    return "fp32", f"on {device}"


def common_args(config: TrainConfig, output_dir: Path, device: str, dtype_name: str) -> dict:
    """Trainer arguments shared by every method (SFT, DPO, KTO): the schedule, checkpoints and the
    device policy."""
    on_gpu = device == "cuda"
    precision, _ = mixed_precision(config, device, dtype_name)
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # < 1: a fraction of the steps
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        optim=optimizer_name(config, device),
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        logging_first_step=True,
        # Log a NaN / inf loss as it is: the trainer would otherwise log the window's average
        # instead, and the divergence guard (guards.py) would never see it.
        logging_nan_inf_filter=False,
        save_strategy="steps" if config.save_every else "no",
        save_steps=config.save_every or 500,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # Not on CPU: checkpointing trades speed for memory a small model does not need there,
        # and it would turn off the shared-prefix pass (trainers.prefix_sharing_ok).
        gradient_checkpointing=on_gpu,
        use_cpu=device == "cpu",
        max_length=config.max_seq_len,
        dataloader_num_workers=0,
    )


def sft_args(config: TrainConfig, output_dir: Path, device: str, dtype_name: str,
             has_eval: bool) -> Any:
    from trl import SFTConfig

    eval_every = config.eval_every if has_eval else 0
    return SFTConfig(
        **common_args(config, output_dir, device, dtype_name),
        eval_strategy="steps" if eval_every else "no",
        eval_steps=eval_every or None,
        packing=False,  # build_trainer packs, so that packed rows stay rows (PackedCollator)
        shuffle_dataset=False,
        completion_only_loss=config.completion_only_loss,
        dataset_num_proc=None,
        remove_unused_columns=True,
    )


def build_trainer(config: TrainConfig, run: RunDir, loaded: Any, callbacks: list[Any],
                  convs: tuple[list[Any], list[Any]] | None = None) -> tuple[Any, Any, Any]:
    """(trainer, train dataset, eval dataset) for a config and a loaded model."""
    from engine.training import data as tdata
    from engine.training.batching import PackedCollator
    from engine.training.trainers import (
        FastSFTTrainer,
        cast_trainable_to_fp32,
        keep_4bit_layout_trainable,
    )

    tokenizer = loaded.tokenizer
    train_convs, eval_convs = convs or load_conversations(config)
    train_ds, _ = tdata.build_dataset(tokenizer, train_convs, config.max_seq_len,
                                      config.completion_only_loss)
    if len(train_ds) == 0:
        raise TunedeckError("Every training example has all labels masked (prompts longer than "
                            "max_seq_len?). Raise max_seq_len or shorten the prompts.")
    eval_ds = None
    if eval_convs and config.eval_every:
        eval_ds, _ = tdata.build_dataset(tokenizer, eval_convs, config.max_seq_len,
                                         config.completion_only_loss)
    args = sft_args(config, run.checkpoints_dir, loaded.info.device, loaded.info.dtype,
                    eval_ds is not None)
    model = loaded.model
    model.train()
    if not config.uses_peft:
        for p in model.parameters():
            p.requires_grad_(True)
    rows, collator = train_ds, None  # train_ds stays the examples (the run's train_rows)
    if config.packing:
        rows = tdata.pack(train_ds, config.max_seq_len)
        collator = PackedCollator(tokenizer.pad_token_id)
    trainer = FastSFTTrainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_ds,
                             processing_class=tokenizer, peft_config=peft_config(config),
                             callbacks=callbacks, data_collator=collator)
    if loaded.info.device == "cpu":
        cast_trainable_to_fp32(trainer.model)
        keep_4bit_layout_trainable(trainer.model)
    return trainer, train_ds, eval_ds


def load_conversations(config: TrainConfig) -> tuple[list[Any], list[Any]]:
    """Train conversations (first `limit`) and evaluation conversations (first `eval_limit`)."""
    from engine.training import data as tdata

    path = config.dataset_path()
    train = tdata.conversations(path, config.mapping, "train", config.limit, config.template)
    if config.eval_dataset:
        eval_path = config.eval_dataset_path()
        assert eval_path is not None
        evals = tdata.conversations(eval_path, config.mapping,
                                    "validation" if eval_path.is_dir() else "train",
                                    template=config.template)
    else:
        evals = (tdata.conversations(path, config.mapping, "validation", template=config.template)
                 if path.is_dir() else [])
    if not train:
        raise TunedeckError(f"{path}: no training examples found.")
    return train, evals[: config.eval_limit] if config.eval_limit else evals


def train(run: RunDir, stop_flag: Any) -> str:
    """Train the run to its end, a stop request or a failure; returns the final state."""
    from engine.training.callbacks import RunEventsCallback

    config = TrainConfig.from_yaml(run.config_path)
    config.validate(device_checks=False)
    if config.method in ("dpo", "kto"):  # preference training: engine/training/preference.py
        from engine.training.preference import train_preference

        return train_preference(run, stop_flag, config)
    convs = load_conversations(config)  # bad data fails before minutes of model loading
    log(f"loading {config.model} ({config.method})")
    loaded = load_model(config, progress=log)
    base = record_base(run, config, loaded)
    callback = RunEventsCallback(run, stop_flag, loaded.tokenizer,
                                 convs[1][: config.sample_k] if config.sample_every else [],
                                 config.sample_every)
    from engine.training import tensorboard

    trainer, train_ds, _ = build_trainer(
        config, run, loaded, [callback, *tensorboard.callbacks(run, config, log)], convs)
    if not run_trainer(run, stop_flag, config, loaded, trainer, callback, len(train_ds)):
        return "stopped"
    final = run.adapter_dir if config.uses_peft else run.path / "model"
    try:
        trainer.save_model(str(final))
        loaded.tokenizer.save_pretrained(str(final))
    except OSError as err:
        from engine.training.rundir import write_failure

        shutil.rmtree(final, ignore_errors=True)  # half an adapter must not look like one
        raise write_failure(err, f"the final {final.name}") from err
    if base is not None and is_main_process():
        from engine.adapter_base import write_record

        write_record(final, base)
    return "done"


def record_base(run: RunDir, config: TrainConfig, loaded: Any) -> Any:
    """Record the base this run trains against (model, weights fingerprint, quantization) in the
    run directory, where its checkpoints find it; the final adapter gets a copy. Every UI loads
    an adapter on that base (`engine.adapter_base`). None for a full fine-tune (no adapter)."""
    if not config.uses_peft and config.method not in ("dpo", "kto"):
        return None
    from engine.adapter_base import record_for, write_record

    record = record_for(config.model, loaded)
    if is_main_process():
        write_record(run.path, record)
    return record


def run_trainer(run: RunDir, stop_flag: Any, config: TrainConfig, loaded: Any, trainer: Any,
                callback: Any, train_rows: int) -> bool:
    """Every method's run once its trainer is built: status "starting", then training from the
    newest checkpoint. False when a stop request or signal ended it early."""
    from engine.training.guards import DivergenceGuard, guard_checkpoints

    log_precision(config, loaded.info)
    callback.trainer = trainer
    guard = DivergenceGuard()
    trainer.add_callback(guard)  # after the events callback: the NaN step is logged first
    guard_checkpoints(trainer, guard)
    current = run.read_status().get("state")
    run.write_status(current if current == "stopping" else "starting",
                     train_rows=train_rows, device=loaded.info.device)
    if stop_flag.is_set():
        return False
    resume_from = resume_checkpoint(run)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if guard.diverged is not None:
        raise guard.error(config, run.latest_checkpoint())
    return not (callback.stopped_by_request or stop_flag.is_set())


def resume_checkpoint(run: RunDir) -> Path | None:
    """The newest complete checkpoint. Ones cut short are removed (they hold nothing usable,
    and the trainer would write the same step's folder over them) and the log says so."""
    latest = run.latest_checkpoint()
    for cut in run.cut_checkpoints():
        log(f"{cut.name} was cut short (no completion marker): removed it")
        if is_main_process():
            shutil.rmtree(cut, ignore_errors=True)
    if latest is not None:
        log(f"resuming from {latest.name}")
    return latest


def log(message: str) -> None:
    with contextlib.suppress(OSError):  # train.log on a full disk: the status comes first
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def log_precision(config: TrainConfig, info: Any) -> None:
    precision, why = mixed_precision(config, info.device, info.dtype)
    log(f"precision: {precision}" + ("" if precision == "fp32" else " mixed") + f" ({why})")


def is_main_process() -> bool:
    """Under `accelerate launch` only rank 0 writes the run directory."""
    return int(os.environ.get("RANK", "0")) == 0


class _ReadOnlyRun(RunDir):
    """The run directory as non-zero ranks see it: they read, never write."""

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        return self.read_status()

    def append_event(self, type: str, **fields: Any) -> dict[str, Any]:
        return {"type": type, **fields}

    def repair_events(self) -> None:
        pass


def main(run_dir: str | Path) -> int:
    from engine.training.callbacks import StopFlag

    path = Path(run_dir).resolve()
    run = RunDir(path) if is_main_process() else _ReadOnlyRun(path)
    if not run.config_path.is_file():
        print(f"{run.path}: no config.yaml, not a run directory.", file=sys.stderr)
        return 2
    lock = None
    if is_main_process():
        try:
            lock = run.acquire_lock(wait=LOCK_WAIT)
        except TunedeckError as err:
            print(f"tunedeck: {err}", file=sys.stderr)
            return 2
        if lock is None:
            # Another runner trains this run: its status and events are not ours to touch.
            holder = run.lock_holder() or {}
            print(f"tunedeck: run {run.id} already has a runner (pid {holder.get('pid', '?')}, "
                  f"holding {run.lock_path}); this one ends without touching it.",
                  file=sys.stderr)
            return 3
    stop_flag = StopFlag()
    stop_flag.install()
    try:
        return _run(run, stop_flag)
    finally:
        stop_flag.uninstall()
        run.release_lock(lock)


def _run(run: RunDir, stop_flag: Any) -> int:
    # Library deprecation chatter would bury the lines that matter in train.log.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        run.repair_events()
        # The pid with its start time: `stop` signals only that very process.
        run.write_status("starting", pid=os.getpid(), pid_start=process_start_time(os.getpid()),
                         error=None)
        if is_main_process():
            run.adopt_checkpoints()
        state = train(run, stop_flag)
    except BaseException as err:  # the state must say "failed" whatever broke
        with contextlib.suppress(OSError):
            traceback.print_exc()
        if isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and not err.code):
            state, message = "stopped", None
        else:
            first = (str(err).strip().splitlines() or [""])[0][:200]
            message = f"{OOM_ADVICE} ({type(err).__name__}: {first})" if is_oom(err) \
                else describe(err)
            state = "failed"
        log(f"{state}: {message}" if message else state)
        if not run.write_final_status(state, error=message, pid=os.getpid()):
            log("could not record this in status.json either")
        try:
            run.append_event("state", state=state, **({"error": message} if message else {}))
        except TunedeckError as write_err:  # rundir.RunWriteError: say so in train.log
            log(str(write_err))
        return 1 if state == "failed" else 0
    run.write_status(state, error=None, pid=os.getpid(), finished=time.time())
    run.append_event("state", state=state)
    log(state)
    return 0


def describe(err: BaseException) -> str:
    if isinstance(err, TunedeckError):
        return str(err)
    from engine.training.rundir import is_disk_full, write_failure

    if is_disk_full(err):  # wherever it happened: say it plainly, with the file when known
        assert isinstance(err, OSError)
        what = Path(err.filename).name if isinstance(err.filename, str) else "the run directory"
        return str(write_failure(err, what))
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''} (see train.log)"

"""What every training recipe shares: the base model, the PEFT config, the precision, the
trainer arguments, the data, the base record, logging, and the run of a built trainer (guards,
resume). Imported by the recipes and the runner; it imports none of them."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError
from engine.training.config import ADAPTER_METHODS, TrainConfig
from engine.training.distributed import describe_world, is_main_process, rank
from engine.training.rundir import RunDir


def optimizer_name(config: TrainConfig, device: str) -> str:
    if config.optimizer != "auto":
        return config.optimizer
    return "paged_adamw_8bit" if device == "cuda" else "adamw_torch"


def load_model(config: TrainConfig, progress: Any = None) -> Any:
    """The base model for the method: 4-bit for QLoRA, the device dtype otherwise."""
    from engine import models
    from engine.training.distributed import local_rank, world_size

    if world_size() > 1:
        import torch

        if torch.cuda.is_available():
            # "cuda" means this rank's own GPU from here on, not every rank's GPU 0.
            torch.cuda.set_device(local_rank())

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


def common_args(config: TrainConfig, output_dir: Path, device: str, dtype_name: str,
                checkpointing: bool | None = None) -> dict:
    """Trainer arguments shared by every method (SFT, DPO, KTO): the schedule, checkpoints and the
    device policy. `checkpointing`: gradient checkpointing as the recipe chose it
    (preflight_checks.checkpointing_choice); None keeps it on CUDA, off elsewhere."""
    if checkpointing is None:
        checkpointing = device == "cuda"
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
        # It trades speed for memory, and turns off the shared-prefix pass
        # (trainers.prefix_sharing_ok): only where the memory is needed.
        gradient_checkpointing=checkpointing,
        use_cpu=device == "cpu",
        max_length=config.max_seq_len,
        dataloader_num_workers=0,
    )


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


def record_base(run: RunDir, config: TrainConfig, loaded: Any) -> Any:
    """Record the base this run trains against (model, weights fingerprint, quantization) in the
    run directory, where its checkpoints find it; the final adapter gets a copy. Every UI loads
    an adapter on that base (`engine.adapter_base`). None for a full fine-tune (no adapter)."""
    if not config.uses_peft and config.method not in ADAPTER_METHODS:
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
    world = trainer.args.world_size
    batch = describe_world(config.batch_size, config.grad_accum, world)
    log(f"processes: {world}; {batch}")
    current = run.read_status().get("state")
    run.write_status(current if current == "stopping" else "starting",
                     train_rows=train_rows, device=loaded.info.device, world_size=world,
                     global_batch=config.batch_size * config.grad_accum * world)
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


def log(message: str, every_rank: bool = False) -> None:
    """A line in train.log. Every rank's output goes there: the others say only what is theirs
    alone to say (`every_rank`: a failure), marked with their rank."""
    if not is_main_process():
        if not every_rank:
            return
        message = f"rank {rank()}: {message}"
    with contextlib.suppress(OSError):  # train.log on a full disk: the status comes first
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def log_precision(config: TrainConfig, info: Any) -> None:
    precision, why = mixed_precision(config, info.device, info.dtype)
    log(f"precision: {precision}" + ("" if precision == "fp32" else " mixed") + f" ({why})")


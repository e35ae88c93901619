"""The SFT recipe (full, LoRA, QLoRA, DoRA): its pre-flight, its trainer arguments, the fast SFT
trainer (`engine.training.trainers`) and the run. Pre-flight tokenizes the training rows exactly
as the run does (engine.training.data), shows one example's tokens with their trained / masked
labels, and fails loudly on the classic silent failures: every label masked, completions without
EOS, pad == eos masking the real EOS, a doubled BOS."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError
from engine.training import data as tdata
from engine.training.config import TrainConfig
from engine.training.data import IGNORE
from engine.training.preflight_checks import (
    NO_ESTIMATE,
    PreflightReport,
    check_model_fit,
    checkpointing_choice,
    parameters_for,
    set_world,
)
from engine.training.rundir import RunDir
from engine.training.shared import (
    common_args,
    is_main_process,
    load_conversations,
    load_model,
    log,
    mixed_precision,
    optimizer_name,
    peft_config,
    record_base,
    run_trainer,
)

# Decoder positions/s of the fast SFT path for a 135M model on this kind of 2-core CPU, with
# nothing shared between rows (DESIGN.md, bench/train_throughput.py); scaled by parameter count
# for other models, and by the positions the batches really run (padding adds, a shared prompt
# prefix saves).
CPU_TOKENS_PER_S = {"lora": 140.0, "dora": 100.0, "qlora": 120.0, "full": 90.0}
CPU_REFERENCE_PARAMS = 135e6
# The training step in bf16 mixed precision on a CPU with native bf16 matmuls, vs fp32: 805 vs
# 476 tokens/s (LoRA), 662 vs 408 (QLoRA) measured on an AVX512-BF16 EPYC.
CPU_BF16_STEP_GAIN = 1.6


def sft_args(config: TrainConfig, output_dir: Path, device: str, dtype_name: str,
             has_eval: bool, checkpointing: bool | None = None) -> Any:
    from trl import SFTConfig

    eval_every = config.eval_every if has_eval else 0
    return SFTConfig(
        **common_args(config, output_dir, device, dtype_name, checkpointing),
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
    from engine.training.batching import PackedCollator
    from engine.training.trainers import FastSFTTrainer, prepare_cpu_training

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
    checkpointing, why = run_checkpointing(config, loaded.info.device, train_ds)
    log(f"gradient checkpointing {why}")
    args = sft_args(config, run.checkpoints_dir, loaded.info.device, loaded.info.dtype,
                    eval_ds is not None, checkpointing)
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
        prepare_cpu_training(trainer.model)
    return trainer, train_ds, eval_ds


def run_checkpointing(config: TrainConfig, device: str, train_ds: Any) -> tuple[bool, str]:
    """Gradient checkpointing for the run, chosen from the same estimate as its pre-flight's
    (`checkpointing_choice`): on CUDA only when the activations would not fit without it."""
    if device != "cuda":
        return False, f"off on {device}"
    try:
        trainable, total, shape = parameters_for(config)
    except Exception:  # a model that does not build on the meta device: the safe side
        return True, NO_ESTIMATE
    rows = [{"input_ids": i, "labels": labels}
            for i, labels in zip(train_ds["input_ids"], train_ds["labels"], strict=True)]
    mean = sum(len(r["input_ids"]) for r in rows) / max(1, len(rows))
    on, why, _ = checkpointing_choice(config, device, total, trainable, shape, mean,
                                      _mean_trained(rows))
    return on, why


def train_sft(run: RunDir, stop_flag: Any, config: TrainConfig) -> str:
    """Train an SFT run (full, LoRA, QLoRA, DoRA) to its end, a stop request or a failure;
    returns the final state."""
    from engine.training.callbacks import RunEventsCallback

    convs = load_conversations(config)  # bad data fails before minutes of model loading
    log(f"loading {config.model} ({config.method})")
    loaded = load_model(config, progress=log)
    base = record_base(run, config, loaded)
    callback = RunEventsCallback(run, stop_flag, loaded.tokenizer,
                                 convs[1][: config.sample_k] if config.sample_every else [],
                                 config.sample_every)
    from engine.training import tensorboard

    # The TensorBoard files are the run directory's too: rank 0 alone writes them.
    mirrors = tensorboard.callbacks(run, config, log) if is_main_process() else []
    trainer, train_ds, _ = build_trainer(config, run, loaded, [callback, *mirrors], convs)
    if not run_trainer(run, stop_flag, config, loaded, trainer, callback, len(train_ds)):
        return "stopped"
    final = run.adapter_dir if config.uses_peft else run.path / "model"
    try:
        trainer.save_model(str(final))  # every rank: FSDP / ZeRO-3 gather the weights together
        if is_main_process():
            loaded.tokenizer.save_pretrained(str(final))
    except OSError as err:
        from engine.training.rundir import write_failure

        shutil.rmtree(final, ignore_errors=True)  # half an adapter must not look like one
        raise write_failure(err, f"the final {final.name}") from err
    if base is not None and is_main_process():
        from engine.adapter_base import write_record

        write_record(final, base)
    return "done"


def preflight_sft(config: TrainConfig,
                  progress: Callable[[str], None] | None = None) -> PreflightReport:
    """Check an SFT config and its data. Never raises for a problem the report can name."""
    report = PreflightReport(ok=False)
    say = progress or (lambda _msg: None)
    try:
        config.validate()
    except TunedeckError as err:
        report.errors.append(str(err))
        return report
    from engine import models
    from engine.training.method_fit import fit_method

    config, report.method_reason = fit_method(config)
    report.method = config.method

    try:
        say("Loading the tokenizer…")
        tokenizer = models.load_tokenizer(config.model)
        say("Reading the data…")
        train_convs, eval_convs = load_conversations(config)
    except TunedeckError as err:
        report.errors.append(str(err))
        return report
    report.train_rows, report.eval_rows = len(train_convs), len(eval_convs)
    policy = models.device_policy()
    report.device = policy.device
    report.precision, report.precision_reason = mixed_precision(config, policy.device,
                                                                policy.dtype_name)
    report.optimizer = optimizer_name(config, policy.device)
    # Until the memory is estimated (below): as the run decides without an estimate.
    report.checkpointing = policy.device == "cuda"
    report.checkpointing_reason = (NO_ESTIMATE if report.checkpointing
                                   else f"off on {policy.device}")

    say("Tokenizing…")
    rows = [tdata.tokenize(tokenizer, c, config.max_seq_len, config.completion_only_loss)
            for c in train_convs]
    _check_rows(report, tokenizer, rows, config)
    if rows:
        ex = rows[0]
        report.example_tokens = [(tokenizer.decode([i]), label != tdata.IGNORE)
                                 for i, label in zip(ex["input_ids"], ex["labels"], strict=True)]
    trained_rows = [r for r in rows if any(label != tdata.IGNORE for label in r["labels"])]
    lengths = [len(r["input_ids"]) for r in trained_rows]
    report.mean_tokens = sum(lengths) / len(lengths) if lengths else 0.0
    per_step = config.batch_size * config.grad_accum
    # Packing fills rows of max_seq_len tokens (best fit, so about this many rows).
    batch_rows = (math.ceil(sum(lengths) / config.max_seq_len) if config.packing
                  else len(trained_rows))
    report.batch_rows = batch_rows
    if config.max_steps > 0:
        report.steps = config.max_steps
    else:
        report.steps = max(1, math.ceil(batch_rows / per_step * config.epochs))

    say("Checking the model's layers and context…")
    if not check_model_fit(config, report):
        report.ok = False
        return report
    say("Counting parameters…")
    try:
        trainable, total, shape = parameters_for(config)
        report.trainable_params, report.total_params = trainable, total
        completion_tokens = _mean_trained(trained_rows)
        row_tokens = sum(lengths) / max(1, batch_rows)  # a packed row holds several examples
        report.checkpointing, report.checkpointing_reason, report.memory_estimate_mb = \
            checkpointing_choice(config, report.device, total, trainable, shape, row_tokens,
                                 completion_tokens)
    except Exception as err:  # a model we cannot build on meta: numbers unknown, not fatal
        report.warnings.append(f"parameters and memory not estimated ({type(err).__name__}: {err})")
    from engine.training.batching import batch_layout

    padding, shared = batch_layout(trained_rows, config.batch_size, config.seed)
    if config.packing:
        if shared > padding + 0.05:
            report.warnings.append(
                f"packing turns off the shared-prefix pass, which would spare {100 * shared:.0f}% "
                f"of the tokens of this data against {100 * padding:.0f}% padding without "
                "packing: packing=false is likely faster here.")
    else:
        report.padding_ratio, report.shared_ratio = padding, shared
    if report.device == "cpu" and report.total_params:
        rate = CPU_TOKENS_PER_S.get(config.method, 100.0) * CPU_REFERENCE_PARAMS / max(
            report.total_params, 1)
        if report.precision == "bf16":
            rate *= CPU_BF16_STEP_GAIN
        positions = 1 + report.padding_ratio - report.shared_ratio
        step_tokens = sum(lengths) / max(1, batch_rows) * per_step * positions
        report.est_seconds = report.steps * step_tokens / rate
    _between_steps(report, config, trained_rows)
    set_world(report, config, 1)  # the launch sets its own (launch.preflight_launch)
    report.ok = not report.errors
    return report


def _between_steps(report: PreflightReport, config: TrainConfig,
                   trained_rows: list[dict[str, list[int]]]) -> None:
    """Add evaluation and sampling to the time (they can take longer than the steps), and say
    which row limits the config applies, since the form may not show them."""
    from engine.training.suggest import between_steps

    train_rate = None
    if report.est_seconds:  # real tokens per second of the training steps
        per_step = config.batch_size * config.grad_accum
        train_rate = report.steps * per_step * report.mean_tokens / report.est_seconds
    report.between = between_steps(config, report.steps, report.eval_rows, report.mean_tokens,
                                   train_rate, _mean_trained(trained_rows), report.total_params)
    if report.est_seconds is not None:
        report.train_seconds = report.est_seconds
        report.est_seconds += report.between.seconds
    if config.limit:
        report.warnings.append(f"limit {config.limit} (set in the config): only the first "
                               f"{config.limit} training rows are used.")
    if config.eval_limit:
        report.warnings.append(f"eval_limit {config.eval_limit} (set in the config): each "
                               f"evaluation reads the first {config.eval_limit} rows.")


def _mean_trained(rows: list[dict[str, list[int]]]) -> float:
    if not rows:
        return 0.0
    return sum(sum(1 for label in r["labels"] if label != -100) for r in rows) / len(rows)


def _check_rows(report: PreflightReport, tokenizer: Any, rows: list[dict[str, list[int]]],
                config: TrainConfig) -> None:
    if not rows:
        report.errors.append("No training rows.")
        return
    masked = [i for i, r in enumerate(rows) if all(label == IGNORE for label in r["labels"])]
    if len(masked) == len(rows):
        report.errors.append(
            f"Every label is masked in all {len(rows)} rows: nothing would be trained. The "
            f"prompts are longer than max_seq_len={config.max_seq_len}, or the completions are "
            "empty. Raise max_seq_len or check the column mapping.")
        return
    if masked:
        report.warnings.append(
            f"{len(masked)} of {len(rows)} rows have every label masked (prompt longer than "
            f"max_seq_len={config.max_seq_len}) and will be skipped.")
    eos = tokenizer.eos_token_id
    masked_rows = set(masked)
    no_eos = [i for i, r in enumerate(rows) if i not in masked_rows
              and (not r["labels"] or r["labels"][-1] != eos)]
    if eos is None:
        report.errors.append("The tokenizer has no EOS token: a tuned model would never stop.")
    elif len(no_eos) == len(rows) - len(masked):
        report.errors.append(
            f"No completion ends with a trained EOS ({tokenizer.eos_token!r}): the tuned model "
            "would never learn to stop. Check the chat template, or raise max_seq_len if "
            "completions are cut.")
    elif no_eos:
        report.warnings.append(
            f"{len(no_eos)} rows are cut by max_seq_len={config.max_seq_len} before their EOS; "
            "raise max_seq_len to keep their endings.")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == eos:
        # Labels come from the completion mask, not from `input_ids != pad`, so the EOS is kept;
        # the check above proves it on the data itself.
        if no_eos and len(no_eos) == len(rows) - len(masked):
            report.errors.append(f"pad == eos ({tokenizer.eos_token!r}) and the EOS is masked.")
        else:
            report.warnings.append(
                f"pad == eos ({tokenizer.eos_token!r}); labels come from the completion mask, "
                "so the real EOS stays trained (checked on the data).")
    bos = tokenizer.bos_token_id
    doubled = [i for i, r in enumerate(rows)
               if bos is not None and len(r["input_ids"]) > 1
               and r["input_ids"][0] == bos and r["input_ids"][1] == bos]
    if doubled:
        report.errors.append(f"{len(doubled)} rows start with a doubled BOS ({tokenizer.bos_token!r}).")
    if not config.completion_only_loss:
        report.warnings.append("completion_only_loss is off: the prompt tokens are trained too.")

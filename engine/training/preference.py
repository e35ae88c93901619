"""Preference training: TRL's `DPOTrainer` / `KTOTrainer` from a `TrainConfig` (method dpo | kto).

The runner hands a dpo/kto run to `train_preference`, which uses the same run directory, events,
stop/save controls and checkpoints as SFT. Training is always a LoRA adapter (the reference model
is then the same weights with the adapter disabled, so no second model is held in memory):

- from the base model: a fresh LoRA adapter (lora_r / lora_alpha / lora_dropout / target_modules);
- from an SFT adapter (`adapter: <run id or folder>`): that adapter is loaded trainable and TRL
  keeps a frozen copy of it as the reference, so the policy starts at, and is measured against,
  the SFT model — and the saved adapter applies directly to the base model. That base is the
  one the SFT adapter was trained against (its 4-bit base for QLoRA, `engine.adapter_base`).

The dataset is a JSONL file in TRL's fields, e.g. from ``tunedeck ratings export``:
DPO ``prompt``/``chosen``/``rejected``, KTO ``prompt``/``completion``/``label``.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, TunedeckError
from engine.training.lora_policy import load_start as load_base

FIELDS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}
# The answers of a row the trained pass runs: DPO's chosen and rejected as one batch; KTO's
# completion (its KL pass over mismatched pairs runs without gradients, keeping no activations).
ANSWERS = {"dpo": ("chosen", "rejected"), "kto": ("completion",)}
# Trainer log keys passed through into "log" events (the live view's rewards and accuracy).
PASSTHROUGH_PREFIXES = ("rewards/", "logps/", "logits/", "kl")


# --------------------------------------------------------------------------- data


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in value)


def load_rows(path: Path, method: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The file's rows, checked against TRL's fields for `method` (file, line, field, fix)."""
    fields = FIELDS[method]
    if path.is_dir():
        found = next((path / n for n in ("train.jsonl", "train.json") if (path / n).is_file()),
                     None)
        if found is None:
            raise ConfigError(f"dataset: {path} has no train.jsonl; give the JSONL file that "
                              f"`tunedeck ratings export --format {method}` wrote.")
        path = found
    rows: list[dict[str, Any]] = []
    conversational: bool | None = None
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise TunedeckError(f"{path} line {n}: not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict):
                raise TunedeckError(f"{path} line {n}: expected a JSON object.")
            missing = [f for f in fields if f not in row]
            if missing:
                raise TunedeckError(
                    f"{path} line {n}: missing field(s) {', '.join(missing)}; {method} training "
                    f"needs {', '.join(fields)} (export with `tunedeck ratings export --format "
                    f"{method}`).")
            if method == "kto" and not isinstance(row["label"], bool):
                raise TunedeckError(f"{path} line {n}: label must be true or false "
                                    f"(got {row['label']!r}).")
            texts = [f for f in fields if f != "label"]
            chat = _is_messages(row["prompt"])
            for f in texts:
                if not (_is_messages(row[f]) if chat else isinstance(row[f], str)):
                    kind = "lists of {role, content} messages" if chat else "strings"
                    raise TunedeckError(f"{path} line {n}: field {f} must be {kind} like "
                                        "prompt, in every row.")
            if conversational is None:
                conversational = chat
            elif conversational != chat:
                raise TunedeckError(f"{path} line {n}: mixes plain-text and conversational rows; "
                                    "a dataset must be one or the other.")
            rows.append({f: row[f] for f in fields})
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise TunedeckError(f"{path}: no rows to train on.")
    if method == "kto" and len({r["label"] for r in rows}) < 2:
        raise TunedeckError(f"{path}: KTO needs both desirable (label true) and undesirable "
                            "(label false) examples; rate some of each.")
    return rows


# --------------------------------------------------------------------------- trainer


def tokenized(tokenizer: Any, row: dict[str, Any], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, prompt + answer ids) of a row, conversational rows through the chat template."""
    if isinstance(row["prompt"], list):
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(row["prompt"] + row[answer], tokenize=True,
                                             return_dict=True)["input_ids"]
    else:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        full = prompt + tokenizer(row[answer], add_special_tokens=False)["input_ids"]
    return prompt, full


def sequence_lengths(tokenizer: Any, rows: list[dict[str, Any]],
                     method: str) -> list[list[tuple[int, int]]]:
    """(prompt tokens, prompt + answer tokens) of each sequence of each row that the trained pass
    runs (`ANSWERS`)."""
    out = []
    for row in rows:
        pairs = []
        for answer in ANSWERS[method]:
            prompt, full = tokenized(tokenizer, row, answer)
            pairs.append((len(prompt), len(full)))
        out.append(pairs)
    return out


def memory_tokens(lengths: list[list[tuple[int, int]]], max_seq_len: int) -> tuple[float, float]:
    """(tokens, trained tokens) per sequence on average, cut at max_seq_len: the memory
    estimate's row."""
    pairs = [pair for row in lengths for pair in row] or [(0, 0)]
    full = [min(whole, max_seq_len) for _, whole in pairs]
    trained = [max(0, min(whole, max_seq_len) - prompt) for prompt, whole in pairs]
    return sum(full) / len(pairs), sum(trained) / len(pairs)


def run_checkpointing(config: Any, loaded: Any, rows: list[dict[str, Any]]) -> tuple[bool, str]:
    """Gradient checkpointing for a dpo/kto run, from the same estimate as its pre-flight's."""
    from engine.training.lora_policy import run_checkpointing as decide

    device = loaded.info.device
    if device != "cuda":  # nothing to tokenize for a decision that is made already
        return decide(config, device, False, 0.0, 0.0)
    mean, trained = memory_tokens(sequence_lengths(loaded.tokenizer, rows, config.method),
                                  config.max_seq_len)
    return decide(config, device, loaded.info.quantization == "4bit", mean, trained,
                  sequences=len(ANSWERS[config.method]))


def preference_args(config: Any, output_dir: Path, device: str, dtype_name: str,
                    checkpointing: bool | None = None) -> Any:
    from engine.training.shared import common_args

    common = dict(common_args(config, output_dir, device, dtype_name, checkpointing),
                  eval_strategy="no", beta=config.beta)
    if config.method == "dpo":
        from trl import DPOConfig

        return DPOConfig(**common)
    from trl import KTOConfig

    return KTOConfig(**common)


def build_preference_trainer(config: Any, run_dir: Path | str, callbacks: list[Any],
                             loaded: Any = None, rows: list[dict] | None = None) -> Any:
    """A ready DPOTrainer / KTOTrainer for a dpo/kto config; checkpoints go to run_dir.
    `rows`: the already loaded preference rows (read from the config's dataset otherwise)."""
    from datasets import Dataset

    from engine.training.lora_policy import prepare_on_cpu, start_policy

    if config.method not in FIELDS:
        raise ConfigError(f"method: {config.method!r} is not a preference method (dpo, kto).")
    if rows is None:
        rows = load_rows(config.dataset_path(), config.method, config.limit)
    loaded = loaded or load_base(config)
    model, peft_config = start_policy(config, loaded.model)  # always a LoRA adapter
    model.train()
    from engine.training.shared import log

    checkpointing, why = run_checkpointing(config, loaded, rows)
    log(f"gradient checkpointing {why}")
    args = preference_args(config, Path(run_dir) / "checkpoints", loaded.info.device,
                           loaded.info.dtype, checkpointing)
    if config.method == "dpo":
        from trl import DPOTrainer as Trainer
    else:
        from trl import KTOTrainer as Trainer
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      processing_class=loaded.tokenizer, peft_config=peft_config,
                      callbacks=callbacks)
    prepare_on_cpu(trainer, loaded.info.device)
    return trainer


# --------------------------------------------------------------------------- the run


def passthrough_callback_class(prefixes: tuple[str, ...]) -> type:
    """The runner's events callback class, with the trainer's metrics that start with one of
    `prefixes` (DPO / KTO's implicit rewards, GRPO's rewards and KL) in its "log" events."""
    from engine.training.callbacks import RunEventsCallback, _num

    class PassthroughEventsCallback(RunEventsCallback):
        extra: dict[str, Any] = {}

        def on_log(self, args: Any, state: Any, control: Any,
                   logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.extra = {k: _num(v) for k, v in (logs or {}).items() if k.startswith(prefixes)}
            super().on_log(args, state, control, logs=logs, **kwargs)

        def _emit(self, kind: str, step: int, **fields: Any) -> None:
            if kind == "log":
                fields.update(self.extra)
            super()._emit(kind, step, **fields)

    return PassthroughEventsCallback


def events_callback(run: Any, stop_flag: Any, tokenizer: Any, samples: list[Any],
                    sample_every: int) -> Any:
    """The runner's events callback, with the trainer's preference metrics in "log" events."""
    cls = passthrough_callback_class(PASSTHROUGH_PREFIXES)
    return cls(run, stop_flag, tokenizer, samples, sample_every)


def sample_conversations(rows: list[dict[str, Any]], method: str, k: int) -> list[Any]:
    """The first k conversational prompts with their preferred answer, for sample events."""
    from engine.training.data import Conversation

    out = []
    for row in rows:
        if not _is_messages(row["prompt"]):
            return []
        answer = row["chosen"] if method == "dpo" else row["completion"]
        if method == "kto" and not row["label"]:
            continue
        out.append(Conversation(row["prompt"], answer, answer[-1]["content"]))
        if len(out) >= k:
            break
    return out


def train_preference(run: Any, stop_flag: Any, config: Any) -> str:
    """The runner's dpo/kto path: train to the end, a stop request or a failure; final state."""
    from engine.training.shared import log, record_base, run_trainer

    log(f"loading {config.model} ({config.method}"
        + (f" from adapter {config.adapter})" if config.adapter else ")"))
    loaded = load_base(config, progress=log)
    base = record_base(run, config, loaded)
    rows = load_rows(config.dataset_path(), config.method, config.limit)
    samples = sample_conversations(rows, config.method, config.sample_k) \
        if config.sample_every else []
    callback = events_callback(run, stop_flag, loaded.tokenizer, samples, config.sample_every)
    from engine.training import tensorboard

    trainer = build_preference_trainer(config, run.path,
                                       [callback, *tensorboard.callbacks(run, config, log)],
                                       loaded=loaded, rows=rows)
    if not run_trainer(run, stop_flag, config, loaded, trainer, callback, len(rows)):
        return "stopped"
    from engine.training.lora_policy import save_adapter

    save_adapter(run, trainer, loaded.tokenizer, base)
    return "done"


# --------------------------------------------------------------------------- pre-flight


def preflight_preference(config: Any, progress: Any = None) -> Any:
    """`engine.training.preflight.preflight` for dpo/kto: the data checked against TRL's fields,
    one example's chosen answer with its trained tokens, parameter counts and steps."""
    import math

    from engine import models
    from engine.training.preflight_checks import PreflightReport

    report = PreflightReport(ok=False)
    say = progress or (lambda _msg: None)
    try:
        config.validate()
        say("Loading the tokenizer…")
        tokenizer = models.load_tokenizer(config.model)
        say("Reading the data…")
        rows = load_rows(config.dataset_path(), config.method, config.limit)
    except TunedeckError as err:
        report.errors.append(str(err))
        return report
    report.train_rows = len(rows)
    policy = models.device_policy()
    report.device = policy.device
    from engine.training.shared import mixed_precision, optimizer_name

    report.precision, report.precision_reason = mixed_precision(config, policy.device,
                                                                policy.dtype_name)
    report.optimizer = optimizer_name(config, policy.device)
    say("Tokenizing…")
    answer = ANSWERS[config.method][0]  # DPO: the chosen one
    prompt, full = tokenized(tokenizer, rows[0], answer)
    report.example_tokens = [(tokenizer.decode([t]), n >= len(prompt))
                             for n, t in enumerate(full)]
    sequences = sequence_lengths(tokenizer, rows, config.method)
    lengths = [row[0][1] for row in sequences]
    report.mean_tokens = sum(lengths) / len(lengths)
    long = sum(1 for n in lengths if n > config.max_seq_len)
    if long:
        report.warnings.append(f"{long} of {len(rows)} rows are longer than max_seq_len="
                               f"{config.max_seq_len} and will be cut.")
    if config.method == "kto":
        good = sum(1 for r in rows if r["label"])
        report.warnings.append(f"KTO data: {good} desirable, {len(rows) - good} undesirable.")
    per_step = config.batch_size * config.grad_accum
    report.steps = config.max_steps if config.max_steps > 0 else max(
        1, math.ceil(len(rows) / per_step * config.epochs))
    from engine.training.preflight_checks import check_model_fit

    if not check_model_fit(config, report):
        return report
    from engine.training.lora_policy import plan_memory

    plan_memory(config, report, *memory_tokens(sequences, config.max_seq_len),
                sequences=len(ANSWERS[config.method]))
    report.ok = not report.errors
    return report

"""GRPO: reinforcement learning from verifiable rewards, through TRL's `GRPOTrainer` (method grpo).

The same config file, pre-flight, detached runner, run directory, stop / save-now / resume as
the other recipes. Each step samples `num_generations` completions of a few training prompts,
scores them with the rewards of `engine.training.rewards` (SQL execution against the dataset's
database, answer match, label match, format, or a user's function named in the config), and moves
the policy towards the completions that scored above their group's mean.

Training is always a LoRA adapter, as for preference training:

- from the base model: a fresh LoRA adapter; the reference for the KL term (`beta`) is the base
  (the adapter disabled);
- from an SFT adapter (`adapter: RUN_ID`): that adapter trains on, and TRL keeps a frozen copy of
  it as the reference, so the KL term holds the policy near the SFT model it started from. The
  base is the one the SFT adapter was trained against (`engine.adapter_base`).

The prompts are the SFT data's (the `template` renders them, as for SFT and evaluation) and the
rewards compare with the data's reference (its SQL query, answer or label).

Nothing here imports torch at module level.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError
from engine.training.lora_policy import load_start, plan_memory

# Trainer log keys passed into "log" events: the live view's reward series, KL and lengths.
PASSTHROUGH_PREFIXES = ("reward", "rewards/", "kl", "completions/", "frac_reward_zero_std",
                        "entropy", "clip_ratio/")
# Seconds per decoding step of a 135M model on a 2-core CPU (one sequence; each more sequence in
# the batch adds a share), and the training pace of a LoRA step — scaled by parameter count.
CPU_DECODE_SECONDS = 0.04
CPU_DECODE_BATCH_SHARE = 0.12
CPU_TRAIN_TOKENS_PER_S = 140.0
CPU_REFERENCE_PARAMS = 135e6


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class Prompts:
    rows: list[dict[str, Any]]  # {"prompt": messages, "reference": str} for the trainer
    task: str  # sql | answer | classification | text (engine.evaluation.metrics)
    labels: list[str]  # classification's labels (the distinct references)


def load_prompts(config: Any) -> Prompts:
    """The training split's prompts with their references, and the task they are."""
    from engine.evaluation.metrics import detect_task, reference_of
    from engine.training import data as tdata

    path = config.dataset_path()
    examples = tdata.load_examples(path, config.mapping, "train", config.limit)
    if not examples:
        raise TunedeckError(f"{path}: no training examples found.")
    task = detect_task(examples)
    if config.template:
        from engine.templates import get_template

        chosen = get_template(config.template)
        convs = [tdata.templated_conversation(ex, chosen) for ex in examples]
    else:
        convs = [tdata.to_conversation(ex) for ex in examples]
    rows = [{"prompt": conv.prompt, "reference": reference_of(ex, task)}
            for ex, conv in zip(examples, convs, strict=True)]
    labels = sorted({r["reference"] for r in rows}) if task == "classification" else []
    return Prompts(rows, task, labels)


def reward_spec(config: Any, task: str) -> dict[str, float]:
    from engine.training import rewards

    return dict(config.rewards) if config.rewards is not None else rewards.default_spec(task)


def reward_functions(config: Any, prompts: Prompts,
                     base_dir: Path | None = None) -> tuple[list[Any], list[float]]:
    from engine.training import rewards

    database = Path(config.database).expanduser() if config.database else None
    return rewards.build(reward_spec(config, prompts.task), task=prompts.task, database=database,
                         labels=prompts.labels, base_dir=base_dir)


# Completions per prompt: TRL's 8 where sampling is batched on a GPU; on a CPU each is sampled
# token by token and a step's time grows with them, so 4 (the fewest that still give a
# group's mean and spread some meaning, as in TRL's small-model examples).
GENERATIONS = {"cuda": 8, "cpu": 4}
# Sampling temperature: TRL's 1.0 keeps a group's completions different, which GRPO's
# advantages need (a group that agrees teaches nothing).
TEMPERATURE = 1.0
COMPLETION_MARGIN = 16  # tokens beyond the longest reference: room for a closing fence, EOS


def fit_settings(config: Any, reference_lengths: list[int], prompt_lengths: list[int],
                 device: str, context: int | None = None) -> tuple[Any, list[str]]:
    """The config with GRPO's unset generation settings fitted, and a line of why for each."""
    reasons, changes = [], {}
    if config.num_generations is None:
        batch = config.batch_size * config.grad_accum
        wanted = GENERATIONS.get(device, 4)
        # The largest count up to `wanted` that splits the batch into whole groups.
        fits = [n for n in range(2, max(2, batch) + 1) if batch % n == 0 and n <= wanted]
        changes["num_generations"] = n = max(fits) if fits else 2
        reasons.append(f"num_generations {n}: {wanted} per prompt on {device}"
                       + (f", fitted to the batch of {batch}" if n != wanted else "")
                       + f" ({batch // n} prompt(s) a step)")
    if config.max_completion_length is None:
        longest = max(reference_lengths) if reference_lengths else 64
        length = -(-(longest + COMPLETION_MARGIN) // 16) * 16
        if context and prompt_lengths:
            length = max(16, min(length, context - max(prompt_lengths)))
        changes["max_completion_length"] = length
        reasons.append(f"max_completion_length {length}: the longest reference is {longest} "
                       f"tokens, +{COMPLETION_MARGIN}")
    if config.temperature is None:
        changes["temperature"] = TEMPERATURE
        reasons.append(f"temperature {TEMPERATURE:g}: distinct completions per prompt, which "
                       "the group's comparison needs")
    return (dataclasses.replace(config, **changes) if changes else config), reasons


def lengths(tokenizer: Any, prompts: Prompts) -> tuple[list[int], list[int]]:
    """Token counts of each prompt (chat-templated) and each reference."""
    prompt_lengths, reference_lengths = [], []
    for row in prompts.rows:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        prompt_lengths.append(len(ids))
        reference_lengths.append(len(tokenizer(row["reference"],
                                               add_special_tokens=False)["input_ids"]))
    return prompt_lengths, reference_lengths


def prompts_per_step(config: Any) -> int:
    return max(1, config.batch_size * config.grad_accum // config.num_generations)


def total_steps(config: Any, rows: int) -> int:
    if config.max_steps > 0:
        return config.max_steps
    return max(1, math.ceil(rows / prompts_per_step(config) * config.epochs))


# --------------------------------------------------------------------------- trainer


def memory_tokens(config: Any, prompt_lengths: list[int]) -> tuple[float, float]:
    """(tokens, trained tokens) of a training row for the memory estimate: a prompt and a
    completion of max_completion_length, the width a batch of sampled completions pads to as
    soon as one of them runs to the limit."""
    prompt = sum(prompt_lengths) / max(1, len(prompt_lengths))
    return prompt + config.max_completion_length, float(config.max_completion_length)


def run_checkpointing(config: Any, loaded: Any, prompts: Prompts) -> tuple[bool, str]:
    """Gradient checkpointing for a grpo run (its generation settings fitted), from the same
    estimate as its pre-flight's."""
    from engine.training.lora_policy import run_checkpointing as decide

    device = loaded.info.device
    if device != "cuda":  # nothing to tokenize for a decision that is made already
        return decide(config, device, False, 0.0, 0.0)
    prompt_lengths, _ = lengths(loaded.tokenizer, prompts)
    return decide(config, device, loaded.info.quantization == "4bit",
                  *memory_tokens(config, prompt_lengths))


def grpo_args(config: Any, output_dir: Path, device: str, dtype_name: str,
              weights: list[float], checkpointing: bool | None = None) -> Any:
    from trl import GRPOConfig

    from engine.training.shared import common_args

    common = common_args(config, output_dir, device, dtype_name, checkpointing)
    common.pop("max_length", None)  # GRPO bounds the completions, not the rows
    return GRPOConfig(
        **common, eval_strategy="no", beta=config.beta, num_generations=config.num_generations,
        max_completion_length=config.max_completion_length, temperature=config.temperature,
        reward_weights=weights, log_completions=False,
        # Dropout would make the policy's and the reference's log-probabilities of the same
        # completion differ by noise alone, which the KL term then fights.
        disable_dropout=True)


def build_grpo_trainer(config: Any, run_dir: Path | str, callbacks: list[Any], loaded: Any,
                       prompts: Prompts, funcs: list[Any], weights: list[float]) -> Any:
    from datasets import Dataset
    from trl import GRPOTrainer

    from engine.training.lora_policy import prepare_on_cpu, start_policy

    model, peft_config = start_policy(config, loaded.model)
    model.train()
    from engine.training.shared import log

    checkpointing, why = run_checkpointing(config, loaded, prompts)
    log(f"gradient checkpointing {why}")
    args = grpo_args(config, Path(run_dir) / "checkpoints", loaded.info.device,
                     loaded.info.dtype, weights, checkpointing)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args,
                          train_dataset=Dataset.from_list(prompts.rows),
                          processing_class=loaded.tokenizer, peft_config=peft_config,
                          callbacks=callbacks)
    prepare_on_cpu(trainer, loaded.info.device)
    return trainer


def _text(value: Any) -> str:
    """A prompt's last user turn, or a completion's text (plain or conversational)."""
    if isinstance(value, list):
        return str(value[-1].get("content", "")) if value else ""
    return str(value or "")


def sample_events(logs: dict[str, Any], weights: list[float], references: dict[str, str],
                  k: int) -> list[dict[str, Any]]:
    """Up to k of the last generation batch's completions, each with its rewards: the best and
    the worst completion of each prompt in turn, so a sample round shows what the rewards tell
    apart."""
    prompts, completions = list(logs.get("prompt", ())), list(logs.get("completion", ()))
    per_reward = {name: list(values) for name, values in (logs.get("rewards") or {}).items()}
    advantages = list(logs.get("advantages", ()))
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(_text(prompt), []).append(i)

    def total(i: int) -> float:
        values = [per_reward[name][i] for name in per_reward]
        return sum(w * (0.0 if v != v else v) for w, v in zip(weights, values, strict=False))

    picked: list[int] = []
    for members in groups.values():
        ranked = sorted(members, key=total, reverse=True)
        picked += [ranked[0]] + ([ranked[-1]] if len(ranked) > 1 else [])
        if len(picked) >= k:
            break
    out = []
    for i in picked[:k]:
        prompt = _text(prompts[i])
        out.append({"prompt": prompt, "reference": references.get(prompt, ""),
                    "completion": _text(completions[i]), "reward": round(total(i), 4),
                    "rewards": {name: per_reward[name][i] for name in per_reward},
                    "advantage": advantages[i] if i < len(advantages) else None})
    return out


def events_callback(run: Any, stop_flag: Any, tokenizer: Any, config: Any, prompts: Prompts,
                    weights: list[float]) -> Any:
    """The runner's events callback, with GRPO's metrics in "log" events and, every
    `sample_every` steps, the step's sampled completions as "sample" events with their rewards."""
    from engine.training.preference import passthrough_callback_class

    references = {_text(r["prompt"]): r["reference"] for r in prompts.rows}
    base = passthrough_callback_class(PASSTHROUGH_PREFIXES)

    class GrpoEventsCallback(base):  # type: ignore[misc, valid-type]
        def on_log(self, args: Any, state: Any, control: Any,
                   logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            super().on_log(args, state, control, logs=logs, **kwargs)
            step = state.global_step
            if (config.sample_every and step and step % config.sample_every == 0
                    and self._fresh("sample", step) and self.trainer is not None):
                for sample in sample_events(self.trainer._logs, weights, references,
                                            config.sample_k):
                    self.run.append_event("sample", step=step, temperature=config.temperature,
                                          **sample)
                self.recorded["sample"] = step

    return GrpoEventsCallback(run, stop_flag, tokenizer, [], 0)


def train_grpo(run: Any, stop_flag: Any, config: Any) -> str:
    """The runner's grpo path: train to the end, a stop request or a failure; final state."""
    from engine.training.shared import log, record_base, run_trainer

    prompts = load_prompts(config)  # bad data and rewards fail before the model loads
    funcs, weights = reward_functions(config, prompts)
    log(f"rewards: {', '.join(f'{f.__name__} x{w:g}' for f, w in zip(funcs, weights, strict=True))}"
        f" ({prompts.task} task, {len(prompts.rows)} prompts)")
    log(f"loading {config.model} (grpo" + (f" from adapter {config.adapter})" if config.adapter
                                          else ")"))
    loaded = load_start(config, progress=log)
    prompt_lengths, reference_lengths = lengths(loaded.tokenizer, prompts)
    config, reasons = fit_settings(config, reference_lengths, prompt_lengths, loaded.info.device)
    for reason in reasons:
        log(f"fitted {reason}")
    base = record_base(run, config, loaded)
    callback = events_callback(run, stop_flag, loaded.tokenizer, config, prompts, weights)
    from engine.training import tensorboard

    trainer = build_grpo_trainer(config, run.path,
                                 [callback, *tensorboard.callbacks(run, config, log)],
                                 loaded, prompts, funcs, weights)
    if not run_trainer(run, stop_flag, config, loaded, trainer, callback, len(prompts.rows)):
        return "stopped"
    from engine.training.lora_policy import save_adapter

    save_adapter(run, trainer, loaded.tokenizer, base)
    return "done"


# --------------------------------------------------------------------------- pre-flight


def step_seconds(config: Any, prompt_tokens: float, completion_tokens: float,
                 total_params: int, precision: str) -> float:
    """A CPU estimate of one step: sampling the completions token by token (the larger part),
    then the training pass over prompt + completion, and the reference's pass for the KL term."""
    scale = (total_params or CPU_REFERENCE_PARAMS) / CPU_REFERENCE_PARAMS
    batch = config.batch_size * config.grad_accum
    decode = completion_tokens * CPU_DECODE_SECONDS * (1 + CPU_DECODE_BATCH_SHARE * (batch - 1))
    from engine.training.sft import CPU_BF16_STEP_GAIN

    pace = CPU_TRAIN_TOKENS_PER_S * (CPU_BF16_STEP_GAIN if precision == "bf16" else 1.0)
    passes = 1.0 + (1 / 3 if config.beta else 0.0)  # the reference: a forward pass, no backward
    train = batch * (prompt_tokens + completion_tokens) / pace * passes
    return (decode + train) * scale


def preflight_grpo(config: Any, progress: Any = None) -> Any:
    """`engine.training.preflight.preflight` for grpo: the prompts and the task they are, every
    reward checked on the data's own references (a reference that fails its reward means a wrong
    database or reward), the completion budget against the references' lengths, parameter counts,
    the generation cost and the time."""
    from engine import models
    from engine.training.preflight_checks import PreflightReport, check_model_fit
    from engine.training.shared import mixed_precision, optimizer_name

    report = PreflightReport(ok=False, method="grpo")
    say = progress or (lambda _msg: None)
    try:
        config.validate()
        say("Loading the tokenizer…")
        tokenizer = models.load_tokenizer(config.model)
        say("Reading the data…")
        prompts = load_prompts(config)
        say("Checking the rewards on the references…")
        funcs, weights = reward_functions(config, prompts)
    except TunedeckError as err:
        report.errors.append(str(err))
        return report
    report.train_rows = len(prompts.rows)
    policy = models.device_policy()
    report.device = policy.device
    report.precision, report.precision_reason = mixed_precision(config, policy.device,
                                                                policy.dtype_name)
    report.optimizer = optimizer_name(config, policy.device)
    _check_references(report, prompts, funcs)
    say("Tokenizing…")
    prompt_lengths, reference_lengths = lengths(tokenizer, prompts)
    config, report.fitted = fit_settings(config, reference_lengths, prompt_lengths,
                                         policy.device)
    problems = _batch_problems(config)
    if problems:
        report.errors += problems
        return report
    report.mean_tokens = sum(prompt_lengths) / len(prompt_lengths)
    longest = max(reference_lengths)
    if longest + 8 > config.max_completion_length:
        long = sum(1 for n in reference_lengths if n + 8 > config.max_completion_length)
        report.warnings.append(
            f"max_completion_length: {long} of {len(reference_lengths)} references need more "
            f"than {config.max_completion_length} tokens (the longest {longest}); their "
            f"completions are cut and score low. Raise it to about {longest + 16}.")
    report.steps = total_steps(config, len(prompts.rows))
    if not check_model_fit(config, report):
        return report
    plan_memory(config, report, *memory_tokens(config, prompt_lengths))
    completion = min(config.max_completion_length,
                     sum(reference_lengths) / len(reference_lengths) + 16)
    batch = config.batch_size * config.grad_accum
    report.warnings.append(
        f"generation: each step samples {config.num_generations} completions of "
        f"{prompts_per_step(config)} prompt(s) ({batch} in all, up to "
        f"{config.max_completion_length} tokens each, ~{completion:.0f} expected); "
        f"{report.steps * batch:,} completions over the run.")
    if policy.device == "cpu":
        report.est_seconds = report.steps * step_seconds(
            config, report.mean_tokens, completion, report.total_params, report.precision)
        report.train_seconds = report.est_seconds
    report.ok = not report.errors
    return report


def _batch_problems(config: Any) -> list[str]:
    """The checks of the fitted settings the config could not make while they were unset."""
    try:
        config.validate(device_checks=False)
    except TunedeckError as err:
        return [str(err)]
    return []


def _check_references(report: Any, prompts: Prompts, funcs: list[Any]) -> None:
    """Score the data's own references with each reward: a SQL reward that fails the gold query
    means the wrong database; one a reference cannot earn gives the run nothing to aim at."""
    sample = prompts.rows[:32]
    # An answer is scored after its cue, as the evaluation reads it ("… Answer: 42").
    cue = "Answer: " if prompts.task == "answer" else ""
    completions = [[{"role": "assistant", "content": cue + r["reference"]}] for r in sample]
    columns = {"reference": [r["reference"] for r in sample]}
    for func in funcs:
        try:
            values = func(prompts=[r["prompt"] for r in sample], completions=completions,
                          **columns)
        except Exception as err:  # a user's reward function may raise anything
            report.errors.append(f"rewards: {func.__name__} failed on the data's references "
                                 f"({type(err).__name__}: {err}).")
            continue
        scored = [v for v in values if v is not None and v == v]
        if not scored:  # every row unjudgeable: the run would learn from nothing
            report.errors.append(
                f"rewards: {func.__name__} cannot judge any of the data's own references (of "
                f"{len(sample)}); for SQL, the reference queries fail on the database — check "
                "`database:` (null: the sample database).")
            continue
        mean = sum(scored) / len(scored)
        if mean < 0.5:
            report.warnings.append(
                f"rewards: {func.__name__} gives the data's own references {mean:.2f} on "
                f"average (of {len(sample)}); check the database and the reward.")


"""The heavy steps of `tunedeck gpu-check`, each through the code a user's own run takes: the
shipped recipe as a real run (its directory, events and adapter), the throughput of our trainer
against a plain `Trainer` + PEFT, the merge, and base vs adapter on held-out SQL.

`check_steps()` lists every step with what it needs; `run_check` runs them (engine.gpu_check.report).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engine.gpu_check.probes as probes  # a module, so a test can swap a probe
from engine.errors import TunedeckError
from engine.gpu_check.report import Outcome, Report, Row, Step, run_steps

RECIPE = "sql.yaml"  # the shipped QLoRA recipe (configs/), trained on sample_data/text_to_sql
# The merged model is the adapter's model in plain weights (de-quantized for QLoRA), so greedy
# decoding flips only the odd example; a gap of more than this share of the examples means the
# merge did not reproduce base + adapter.
MERGE_TOLERANCE = 0.1
POLL_S = 1.0  # how often the wait for the runner reads the run directory
PROGRESS_EVERY_S = 10.0


@dataclass
class Options:
    model: str | None = None  # None: the recipe's model (smollm2-135m-instruct)
    steps: int = 200  # training steps of the real run
    bench_steps: int = 30  # steps of each side of the throughput comparison
    eval_limit: int = 40  # held-out examples evaluated per column
    split: str = "test"  # the held-out split of sample_data/text_to_sql
    device: str = "cuda"  # "cpu": the check's own test mode (no GPU numbers)
    train_timeout_s: float = 1800.0

    def validate(self) -> None:
        if self.steps < 1:
            raise TunedeckError(f"--steps must be at least 1, not {self.steps}.")
        if self.bench_steps < 2:
            raise TunedeckError(f"--bench-steps must be at least 2 (the first is warm-up and "
                                f"not timed), not {self.bench_steps}.")
        if self.eval_limit < 1:
            raise TunedeckError(f"--eval-limit must be at least 1, not {self.eval_limit}.")
        if self.device not in ("cuda", "cpu"):
            raise TunedeckError(f"--device must be cuda or cpu, not {self.device!r}.")


@dataclass
class Context:
    """What the steps share: the options, a progress line, and what earlier steps made."""

    options: Options
    say: Callable[[str], None] = lambda _text: None
    run: Any = None  # the training run (engine.training.rundir.RunDir)
    merged: Path | None = None

    def config(self) -> Any:
        """The shipped recipe with this check's overrides: QLoRA, `--steps`, `--model`."""
        from engine.training.config import CONFIGS_DIR, TrainConfig

        overrides = ["method=qlora", f"max_steps={self.options.steps}", "name=gpu-check"]
        config = TrainConfig.from_yaml(CONFIGS_DIR / RECIPE).with_overrides(overrides)
        if self.options.model:
            config.model = self.options.model
        return config


# --------------------------------------------------------------------------- train


def train(ctx: Context) -> Outcome:
    """The recipe as a real run: pre-flight, the detached runner, waiting for it to end."""
    from engine.training.launch import launch
    from engine.training.preflight import preflight

    config = ctx.config()
    ctx.say(f"train: pre-flight of {RECIPE} ({config.model}, {config.method}, "
            f"{config.max_steps} steps)…")
    report = preflight(config)
    if not report.ok:
        raise TunedeckError("pre-flight failed: " + "; ".join(report.errors))
    ctx.run = run = launch(config, check=False)
    ctx.say(f"train: run {run.id} started (tunedeck runs watch {run.id}; log {run.log_path})")
    state = _wait(ctx, run)
    status = run.read_status()
    data: dict[str, Any] = {"run_id": run.id, "run_dir": str(run.path), "state": state,
                            "device": status.get("device")}
    if state != "done":
        error = status.get("error") or "no error recorded"
        raise TunedeckError(f"run {run.id} ended {state}: {error} (see {run.log_path})")
    if not (run.adapter_dir / "adapter_config.json").is_file():
        raise TunedeckError(f"run {run.id} is done but wrote no adapter in {run.adapter_dir}")
    data |= _run_numbers(run, cuda=status.get("device") == "cuda")
    data["adapter"] = str(run.adapter_dir)
    mem = data["peak_mem_mb"]
    return Outcome("ok", f"{data['steps']} steps in {data['seconds']:.0f} s, loss "
                   f"{_num(data['first_loss'])} → {_num(data['last_loss'])}, "
                   f"{_num(data['tokens_per_s'], '.0f')} tokens/s"
                   + (f", peak {mem:.0f} MB" if mem else "") + f"; run {run.id}", data)


def _wait(ctx: Context, run: Any) -> str:
    """Poll the run directory until the runner ends; Ctrl-C or the timeout stops the run."""
    deadline = time.monotonic() + ctx.options.train_timeout_s
    said = 0.0
    try:
        while run.is_active():
            if time.monotonic() > deadline:
                run.stop(wait=60)
                raise TunedeckError(f"run {run.id} did not finish in "
                                    f"{ctx.options.train_timeout_s:.0f} s; stopped it (see "
                                    f"{run.log_path})")
            if time.monotonic() - said > PROGRESS_EVERY_S:
                said = time.monotonic()
                status = run.read_status()
                ctx.say(f"train: {status.get('state')}, step {status.get('step') or 0}/"
                        f"{status.get('total_steps') or '?'}")
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        run.stop(wait=30)  # the runner checkpoints and ends "stopped"
        raise
    return run.state()


def _run_numbers(run: Any, cuda: bool) -> dict[str, Any]:
    """Steps, time, losses, speed and memory, from the run's own events. Memory only on CUDA:
    there the runner logs max_memory_allocated, a peak; on a CPU it logs the current RSS."""
    events = run.read_events()
    logs = [e for e in events if e.get("type") == "log"]
    # The first window holds the kernels' compilation and the caches' warm-up.
    rates = [e["tokens_per_s"] for e in logs[1:] if e.get("tokens_per_s")] or \
        [e["tokens_per_s"] for e in logs if e.get("tokens_per_s")]  # a one-step run
    mems = [e["mem_mb"] for e in logs if e.get("mem_mb")]
    times = [e["t"] for e in events if isinstance(e.get("t"), (int, float))]
    return {"steps": max((e.get("step") or 0 for e in logs), default=0),
            "seconds": (max(times) - min(times)) if times else 0.0,
            "first_loss": logs[0].get("loss") if logs else None,
            "last_loss": logs[-1].get("loss") if logs else None,
            "eval_loss": next((e.get("eval_loss") for e in reversed(events)
                               if e.get("type") == "eval"), None),
            "tokens_per_s": statistics.median(rates) if rates else None,
            "peak_mem_mb": max(mems) if mems and cuda else None}


# --------------------------------------------------------------------------- throughput


def throughput(ctx: Context) -> Outcome:
    from engine.gpu_check.throughput import compare, measure

    config = ctx.config()
    steps = ctx.options.bench_steps
    ctx.say(f"throughput: ours (the runner's trainer), {steps} steps…")
    sides = {"ours": measure("ours", config, steps)}
    # The baseline makes the memory-for-time trade the runner chose for ours.
    checkpointing = sides["ours"].gradient_checkpointing
    ctx.say(f"throughput: Trainer + PEFT, {steps} steps…")
    sides["baseline"] = measure("baseline", config, steps, checkpointing)
    data = compare(sides["baseline"], sides["ours"])
    data["batch_size"], data["max_seq_len"] = config.batch_size, config.max_seq_len
    base, ours = sides["baseline"], sides["ours"]
    value = (f"ours {ours.tokens_per_s:,.0f} tokens/s{_mem(ours.peak_mem_mb)} vs Trainer + PEFT "
             f"{base.tokens_per_s:,.0f}{_mem(base.peak_mem_mb)}: {data['speedup']:.2f}x")
    if data["memory_ratio"] is not None:
        value += f", memory {data['memory_ratio']:.2f}x"
    if data["speedup"] is not None and data["speedup"] < 1:
        return Outcome("warn", value + " (ours is slower here)", data)
    return Outcome("ok", value, data)


def _mem(mb: float | None) -> str:
    return f" (peak {mb:,.0f} MB)" if mb else ""


# --------------------------------------------------------------------------- merge, eval


def merge(ctx: Context) -> Outcome:
    from engine.export import export_merged

    _free_gpu()
    out = ctx.run.path / "merged"
    result = export_merged(ctx.run, out, progress=lambda text: ctx.say(f"merge: {text}"))
    ctx.merged = result.path
    from engine.formatting import human_bytes

    return Outcome("ok", f"{human_bytes(result.size_bytes)} at {result.path}",
                   {"path": str(result.path), "size_bytes": result.size_bytes,
                    "base_model": result.base_model})


def evaluate(ctx: Context) -> Outcome:
    """Base and adapter (one load of the adapter's base), then the merged model on its own."""
    from engine.evaluation import Column, EvalSpec, run_matrix
    from engine.evaluation.evaluator import ADAPTER_TEMPLATE

    _free_gpu()
    config = ctx.config()
    common = dict(data=str(config.dataset_path()), split=ctx.options.split,
                  limit=ctx.options.eval_limit, use_cache=False)
    say = lambda text: ctx.say(f"eval: {text}")  # noqa: E731
    spec = EvalSpec(**common, adapter=str(ctx.run.adapter_dir))
    result = run_matrix(spec, [Column("zero-shot", "zero-shot"),
                               Column("adapter", "zero-shot", adapter=True)],
                        status=say, save=False)
    acc = {"base": result.columns[0].metrics.accuracy,
           "adapter": result.columns[1].metrics.accuracy}
    if ctx.merged is not None:
        _free_gpu()
        merged = run_matrix(EvalSpec(**common, model=str(ctx.merged),
                                     template=config.template or ADAPTER_TEMPLATE),
                            [Column("merged", "zero-shot")], status=say, save=False)
        acc["merged"] = merged.columns[0].metrics.accuracy
    data = {"examples": result.examples, "metric": result.metric_name, "split": ctx.options.split,
            "accuracy": {k: round(v, 4) for k, v in acc.items()}, "table": result.table(),
            "recommendation": result.recommendation}
    value = f"{result.metric_name} on {result.examples} {ctx.options.split} examples: " + \
        ", ".join(f"{k} {100 * v:.1f}%" for k, v in acc.items())
    problems = []
    if acc["adapter"] <= acc["base"]:
        problems.append("the adapter does not beat the base")
    if "merged" in acc and abs(acc["merged"] - acc["adapter"]) > MERGE_TOLERANCE:
        problems.append("the merged model and the adapter disagree")
    if problems:
        return Outcome("warn", value + " (" + "; ".join(problems) + ")", data)
    return Outcome("ok", value, data)


def _free_gpu() -> None:
    """Give back what the previous step's model held before the next one loads: a larger
    `--model` would not fit twice."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the check


def check_steps() -> list[Step]:
    """Every step, in order, with the steps it needs. Looked up at call time, so a test can
    swap one step for a fake."""
    return [
        Step("device", probes.device),
        Step("bf16", probes.bf16, ("device",)),
        Step("4-bit", probes.four_bit, ("device",)),
        Step("train", train, ("4-bit",)),
        Step("throughput", throughput, ("4-bit",)),
        Step("merge", merge, ("train",)),
        Step("eval", evaluate, ("train",)),
    ]


def run_check(options: Options, say: Callable[[str], None] | None = None,
              on_row: Callable[[Row], None] | None = None) -> tuple[Report, Context]:
    """Run every step; the report holds a row per step and what the run was."""
    options.validate()
    ctx = Context(options, say or (lambda _text: None))
    report = Report(info={"options": vars(options).copy(), "versions": _versions()})
    run_steps(check_steps(), ctx, report, on_row)
    if ctx.run is not None:
        report.info |= {"run_id": ctx.run.id, "run_dir": str(ctx.run.path)}
    return report, ctx


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("tunedeck", "torch", "transformers", "peft", "trl", "bitsandbytes"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _num(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)

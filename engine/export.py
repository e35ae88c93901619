"""Export what a run trained: the adapter merged into its base model, or the adapter alone.

- `export_merged`: the base the adapter was trained against (for a QLoRA run its 4-bit weights,
  de-quantized) + the adapter, merged by PEFT's ``merge_and_unload``, saved as a
  standard Hugging Face folder with tokenizer, chat template and a generation config that stops
  on every end-of-turn token. Plain ``AutoModelForCausalLM.from_pretrained(folder)`` loads it.
- `export_adapter`: the adapter in PEFT's own layout (no trainer state) with a model card that
  names the base model, the data, the configuration and the final metrics.

Both write into a temporary folder next to the target and rename it into place, so an export
that fails half-way leaves nothing behind. A bare name as target lands in the data home's
exports folder, where the Models screen and `tunedeck models` find merged models.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import paths
from engine.adapters import (
    ADAPTER_CONFIG,
    AdapterInfo,
    _pick,
    read_run_config,
    resolve,
)
from engine.errors import TunedeckError, first_line
from engine.training.rundir import RunDir

EXPORT_MARKER = "tunedeck-export.json"
# Trainer state that checkpoints hold next to the adapter and an exported adapter must not.
TRAINER_FILES = re.compile(
    r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|trainer_state\.json|"
    r"training_args\.bin|README\.md)$")
END_OF_TURN = re.compile(r"end|eot|eos", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Progress = Callable[[str], None]


@dataclass
class ExportResult:
    kind: str  # "merged" | "adapter"
    path: Path
    adapter: AdapterInfo
    base_model: str
    size_bytes: int
    files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- targets


def exports_target(out: str | Path) -> Path:
    """Where an export goes: a bare name lands under the data home's exports folder."""
    text = str(out).strip()
    if not text:
        raise TunedeckError("No output folder given: use a name (saved under "
                            f"{paths.exports_dir()}) or a path.")
    if "/" not in text and os.sep not in text and not text.startswith(("~", ".")):
        return paths.exports_dir() / text
    return Path(text).expanduser().resolve()


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and (out.is_file() or any(out.iterdir())) and not force:
        raise TunedeckError(f"{out} already exists and is not empty. Choose another name, or "
                            "pass --force to replace it.")


def _staging(out: Path) -> Path:
    paths.ensure_dir(out.parent)
    return out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}"


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished export into place, replacing an old one (only reached with --force)."""
    if out.exists():
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    os.rename(tmp, out)


def _adapter_of(run: RunDir | AdapterInfo | str | Path, checkpoint: str | None) -> AdapterInfo:
    if isinstance(run, AdapterInfo):
        return run
    if isinstance(run, RunDir):
        return _pick(run, checkpoint, run.id)
    return resolve(f"{run}:{checkpoint}" if checkpoint else run)


def _run_of(adapter: AdapterInfo) -> RunDir | None:
    if adapter.kind == "final":
        return RunDir(adapter.path.parent)
    if adapter.kind == "checkpoint":
        return RunDir(adapter.path.parent.parent)
    return None


# --------------------------------------------------------------------------- merged


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every id that ends a reply: the EOS of the tokenizer and of the generation config, and
    each special end-of-turn token the chat template writes (``<|im_end|>``, ``<|eot_id|>``…)."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(getattr(tokenizer, "eos_token_id", None))
    add(getattr(generation_config, "eos_token_id", None))
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates
        template = "\n".join(str(t) for t in template.values())
    for text, token_id in sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1]):
        if text in template and END_OF_TURN.search(text):
            add(token_id)
    return ids


def export_merged(run: RunDir | AdapterInfo | str | Path, out_dir: str | Path, *,
                  checkpoint: str | None = None, base: str | None = None,
                  device: str | None = None, force: bool = False,
                  progress: Progress | None = None, quantize: str | None = None,
                  force_base: bool = False, warn: Progress | None = None) -> ExportResult:
    """Merge a run's adapter into the base it was trained against and save a standard Hugging
    Face folder that reproduces base + adapter.

    The base is loaded as the adapter's record says (`engine.adapter_base`). A QLoRA adapter
    learned against nf4-rounded weights, so its base is loaded in 4-bit with the recorded quant
    settings and de-quantized to the compute dtype (transformers' ``dequantize``, bitsandbytes'
    ``dequantize_4bit`` per layer) before PEFT merges: the merged weights are the ones the
    adapter saw, not the original ones. `base` / `quantize` ("none" | "4bit" | "8bit") override
    the record (with a warning); `force_base` accepts a base whose weights differ from it.
    """
    from engine.adapter_base import load_base, plan_base

    adapter = _adapter_of(run, checkpoint)
    plan = plan_base(adapter, model=base, quantize=quantize, force=force_base, device=device)
    base_ref = base or plan.record.model
    if not base_ref:
        raise TunedeckError(f"{adapter.label}: the base model is unknown (no config.yaml, no "
                            "base_model_name_or_path). Name it with --base MODEL.")
    out = exports_target(out_dir)
    _check_target(out, force)
    say = progress or (lambda _text: None)
    warn = warn or (lambda text: say(f"warning: {text}"))
    say(plan.line)
    for text in plan.warnings:
        warn(text)
    loaded = load_base(plan, device=device)
    for text in getattr(loaded, "extras", {}).get("base_warnings", []):
        warn(text)
    model = _dequantized(loaded, say)
    merged_into = (f"the de-quantized weights of the {plan.describe()} base"
                   if plan.quantization else f"the {plan.describe()} base")
    from engine import models

    models._quiet_transformers()
    from peft import PeftModel

    from engine.notices import peft_wrapping

    say(f"Merging {adapter.label}…")
    try:
        with peft_wrapping():  # PEFT's read of a deprecated transformers alias (engine.notices)
            peft = PeftModel.from_pretrained(model, str(adapter.path), is_trainable=False)
    except (ValueError, RuntimeError, KeyError, OSError) as err:
        raise TunedeckError(f"{adapter.label} does not fit {base_ref}: {type(err).__name__}: "
                            f"{first_line(err, 300)}. Name the model it was trained on with --base.") from None
    merged = peft.merge_and_unload()
    tokenizer = _tokenizer_for(adapter, loaded.tokenizer)
    generation = merged.generation_config
    stops = stop_token_ids(tokenizer, generation)
    generation.eos_token_id = stops[0] if len(stops) == 1 else stops
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    generation.pad_token_id = pad
    if tokenizer.bos_token_id is not None:
        generation.bos_token_id = tokenizer.bos_token_id
    merged.config.pad_token_id = pad
    for stale in ("quantization_config",):  # a full-precision base has none; never carry one
        if hasattr(merged.config, stale):
            delattr(merged.config, stale)

    tmp = _staging(out)
    try:
        say(f"Writing {out}…")
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        run_dir = _run_of(adapter)
        config = read_run_config(run_dir) if run_dir else {}
        metrics = final_metrics(adapter)
        (tmp / "README.md").write_text(
            model_card(adapter, config, metrics, kind="merged", base=base_ref, name=out.name,
                       merged_into=merged_into), encoding="utf-8")
        _write_marker(tmp, "merged", adapter, base_ref, stops, merged_into=merged_into)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result("merged", out, adapter, base_ref)


def _dequantized(loaded: Any, say: Progress) -> Any:
    """The loaded model with its quantized layers replaced by plain Linear layers holding the
    de-quantized weights, in the device's dtype: what a quantized base computes with."""
    model = loaded.model
    quantization = getattr(getattr(loaded, "info", None), "quantization", None)
    if not quantization:
        return model
    say(f"De-quantizing the {quantization} weights to {loaded.info.dtype}, the weights the "
        "adapter was trained against…")
    import torch

    model = model.dequantize(dtype=getattr(torch, str(loaded.info.dtype)))
    model.hf_quantizer = None
    return model


def _tokenizer_for(adapter: AdapterInfo, base_tokenizer: Any) -> Any:
    """The tokenizer training saved with the adapter (it is what the model learned with), else
    the base's; the chat template is carried over when the saved one lacks it."""
    if not (adapter.path / "tokenizer_config.json").is_file():
        return base_tokenizer
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(adapter.path))
    except (OSError, ValueError):
        return base_tokenizer
    if not getattr(tokenizer, "chat_template", None) and getattr(base_tokenizer, "chat_template",
                                                                 None):
        tokenizer.chat_template = base_tokenizer.chat_template
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------- adapter


def export_adapter(run: RunDir | AdapterInfo | str | Path, out_dir: str | Path, *,
                   checkpoint: str | None = None, force: bool = False) -> ExportResult:
    """Copy a run's adapter in PEFT's layout, without trainer state, and write a model card."""
    adapter = _adapter_of(run, checkpoint)
    out = exports_target(out_dir)
    _check_target(out, force)
    run_dir = _run_of(adapter)
    config = read_run_config(run_dir) if run_dir else {}
    tmp = _staging(out)
    try:
        paths.ensure_dir(tmp)
        for item in sorted(adapter.path.iterdir()):
            if item.is_file() and not TRAINER_FILES.match(item.name):
                shutil.copy2(item, tmp / item.name)
        base_ref = adapter.base_model or str(config.get("model") or "")
        _point_at_local_base(tmp / ADAPTER_CONFIG, base_ref)
        _carry_base_record(adapter, tmp)
        (tmp / "README.md").write_text(
            model_card(adapter, config, final_metrics(adapter), kind="adapter", base=base_ref,
                       name=out.name), encoding="utf-8")
        _write_marker(tmp, "adapter", adapter, base_ref, None)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _result("adapter", out, adapter, base_ref)


def _carry_base_record(adapter: AdapterInfo, folder: Path) -> None:
    """An exported adapter leaves its run behind: give it the record of the base it was trained
    against (a checkpoint's lives in the run directory), so it is loaded on that base."""
    from engine.adapter_base import RECORD_FILE, read_record, write_record

    if (folder / RECORD_FILE).is_file():
        return
    record = read_record(adapter)
    if record.known:
        write_record(folder, record)


def _point_at_local_base(config_path: Path, base_ref: str) -> None:
    """PEFT finds the base through ``base_model_name_or_path``. A tunedeck model name (such as
    the default, which lives in a converted cache) means nothing to PEFT: replace it by the
    local folder, unless it already names an existing folder or a hub id."""
    data = json.loads(config_path.read_text())
    current = str(data.get("base_model_name_or_path") or "")
    if current and (Path(current).is_dir() or _HUB_ID.match(current)):
        return
    from engine import models

    try:
        folder = models.local_folder(base_ref or current)
    except TunedeckError:
        return
    data["base_model_name_or_path"] = str(folder)
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- card and metrics


def final_metrics(adapter: AdapterInfo) -> dict[str, Any]:
    """The run's last numbers up to the adapter's step: loss, eval loss, throughput, state."""
    run = _run_of(adapter)
    if run is None:
        return {}
    limit = adapter.step if adapter.kind == "checkpoint" else None
    logs, evals = [], []
    for event in run.read_events():
        step = event.get("step")
        if limit is not None and isinstance(step, (int, float)) and step > limit:
            continue
        if event.get("type") == "log" and event.get("loss") is not None:
            logs.append(event)
        elif event.get("type") == "eval" and event.get("eval_loss") is not None:
            evals.append(event)
    status = run.read_status()
    metrics: dict[str, Any] = {"state": run.state()}
    if logs:
        last = logs[-1]
        metrics.update(step=last.get("step"), epoch=last.get("epoch"), train_loss=last["loss"])
        rates = [e["tokens_per_s"] for e in logs if e.get("tokens_per_s")]
        if rates:
            metrics["tokens_per_s"] = sum(rates) / len(rates)
    if evals:
        metrics["eval_loss"] = evals[-1]["eval_loss"]
        metrics["best_eval_loss"] = min(e["eval_loss"] for e in evals)
    for key in ("total_steps", "train_rows", "device"):
        if status.get(key) is not None:
            metrics[key] = status[key]
    if status.get("started") and status.get("finished"):
        metrics["train_seconds"] = status["finished"] - status["started"]
    return metrics


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return f"`{json.dumps(v)}`"
    return "—" if v is None or v == "" else f"{v}"


def model_card(adapter: AdapterInfo, config: dict[str, Any], metrics: dict[str, Any], *,
               kind: str, base: str, name: str, merged_into: str | None = None) -> str:
    """A Hugging Face model card (README.md with YAML front matter)."""
    import yaml

    method = str(config.get("method") or adapter.method or "lora")
    shown = {"lora": "LoRA", "qlora": "QLoRA", "dora": "DoRA"}.get(method, method)
    front = {"base_model": base, "library_name": "peft" if kind == "adapter" else "transformers",
             "tags": ["tunedeck", method, "sft"]}
    what = {"final": "the final adapter", "checkpoint": f"the checkpoint at step {adapter.step}",
            "folder": "an adapter"}[adapter.kind]
    source = f"run `{adapter.run_id}`, {what}" if adapter.run_id else f"{adapter.path}"
    intro = (f"A {shown} adapter for `{base}`" if kind == "adapter"
             else f"`{base}` with a {shown} adapter merged into its weights")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {name}", "",
             f"{intro}, trained with tunedeck ({source}).", "", "## Base model", "",
             f"- model: `{base}`"]
    if merged_into:
        lines.append(f"- merged into {merged_into}")
    if method == "qlora":
        lines.append(f"- trained against 4-bit ({config.get('quant_type', 'nf4')}) base weights"
                     + ("" if kind == "merged"
                        else "; load the base in 4-bit to reproduce training exactly"))
    lines += ["", "## Data", "", f"- training data: `{config.get('dataset', '—')}`",
              "- evaluation data: " + (f"`{config['eval_dataset']}`" if config.get("eval_dataset")
                                       else "the validation split of the training folder")]
    if config.get("mapping"):
        lines.append(f"- column mapping: {_value(config['mapping'])}")
    if config.get("limit"):
        lines.append(f"- first {config['limit']} training rows only")
    if metrics.get("train_rows"):
        lines.append(f"- training examples: {metrics['train_rows']}")
    lines += ["", "## Training configuration", ""]
    if config:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_value(v)} |" for k, v in config.items()]
    else:
        lines.append("No config.yaml was found next to this adapter.")
    lines += ["", "## Final metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_value(v)} |" for k, v in metrics.items()]
    else:
        lines.append("No metrics were recorded.")
    lines += ["", "## Use", "", "```python"]
    if kind == "adapter":
        lines += ["from peft import AutoPeftModelForCausalLM",
                  "from transformers import AutoTokenizer", "",
                  f'model = AutoPeftModelForCausalLM.from_pretrained("{name}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{name}")']
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'model = AutoModelForCausalLM.from_pretrained("{name}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{name}")']
    lines += ["```", ""]
    return "\n".join(lines)


def _write_marker(folder: Path, kind: str, adapter: AdapterInfo, base: str,
                  stops: list[int] | None, merged_into: str | None = None) -> None:
    marker = {"kind": kind, "run_id": adapter.run_id, "adapter": adapter.ref,
              "adapter_path": str(adapter.path), "step": adapter.step, "base_model": base,
              "exported": time.time()}
    if merged_into:
        marker["merged_into"] = merged_into
    if stops is not None:
        marker["stop_token_ids"] = stops
    (folder / EXPORT_MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def _result(kind: str, out: Path, adapter: AdapterInfo, base: str) -> ExportResult:
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    size = sum((out / f).stat().st_size for f in files)
    return ExportResult(kind=kind, path=out, adapter=adapter, base_model=base, size_bytes=size,
                        files=files)

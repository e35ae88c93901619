"""Evaluate (model, optional adapter, strategy) on a held-out split.

Prompts come from the prompt lab (`engine.strategies.build_prompt` with a template from
`engine.templates`), so what is scored is exactly what the Playground runs. Generation is batched:
prompts sorted by length, left-padded, `model.generate` greedy (sampled for self-consistency).

Every finished example is appended to a cache file keyed by everything that decides its output
(model, adapter weights, template text, strategy, limits, example content), so an interrupted
evaluation resumes where it stopped and a repeated one costs nothing. A LoRA adapter is loaded
once on top of the base model with PEFT; base columns run inside `disable_adapter()`, so the base
weights are loaded once for the whole matrix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engine.evaluation.metrics as M
from engine import paths
from engine.errors import TunedeckError
from engine.evaluation.batched import completion_losses, generate_batch
from engine.evaluation.spec import Column, ColumnResult, EvalSpec

CACHE_VERSION = 1
TEMPLATE_BY_DATASET = {"text_to_sql": "text-to-sql", "sentiment": "sentiment",
                       "arithmetic": "arithmetic-cot"}
# The format `tunedeck train` trains on: the instruction, a blank line, the input, as one user
# turn with no system message (engine.training.data.to_conversation). The built-in "instruction"
# template renders exactly that, so an adapter is evaluated on the prompt it learned.
ADAPTER_TEMPLATE = "instruction"


@dataclass
class EvalData:
    """The examples under test, the few-shot pool and what the task needs to score them."""

    examples: list[Any]
    shots: list[Any]
    task: str
    labels: list[str]
    source: str

    def reference(self, example: Any) -> str:
        return M.reference_of(example, self.task)


# --------------------------------------------------------------------------- inputs


def _is_folder(path: str) -> bool:
    return Path(path).expanduser().is_dir()


def load_data(spec: EvalSpec, need_shots: bool = True) -> EvalData:
    """The test examples (first `limit`), the few-shot pool, the task kind and its labels."""
    from engine.data import load_examples

    data = str(Path(spec.data).expanduser())
    folder = _is_folder(data)
    # The whole split is read so the task is told from all of it, not from the first few rows.
    everything = load_examples(data, split=spec.split if folder else None)
    examples = everything[:spec.limit] if spec.limit is not None else everything
    shots: list[Any] = []
    if spec.shots:
        shots_folder = _is_folder(spec.shots)
        shots = load_examples(spec.shots, split=spec.shots_split if shots_folder else None)
    elif folder and (need_shots or spec.task == "auto"):
        try:
            shots = load_examples(data, split=spec.shots_split)
        except TunedeckError:
            if need_shots:
                raise
    elif need_shots:
        raise TunedeckError(
            f"{data} is one file, so there is no train split to draw few-shot examples "
            "from: give a folder with train/test splits, or --shots FILE.")
    task = spec.task
    if task not in M.TASKS:
        raise TunedeckError(f"Unknown task '{task}'. Use one of: {', '.join(M.TASKS)}.")
    if task == "auto":
        task = M.detect_task([*everything, *shots])
    labels: list[str] = []
    if task == "classification":
        # Labels from both pools, so a label the test sample lacks can still be predicted.
        pool = [*everything, *shots]
        labels = sorted({M.reference_of(e, task) for e in pool if M.reference_of(e, task)})
    source = f"{data}[{spec.split}]" if folder else data
    return EvalData(examples, shots, task, labels, source)


def default_template(spec: EvalSpec) -> str:
    if spec.template:
        return spec.template
    return TEMPLATE_BY_DATASET.get(Path(spec.data).expanduser().resolve().name
                                   if _is_folder(spec.data)
                                   else Path(spec.data).expanduser().resolve().parent.name,
                                   "instruction")


def resolve_adapter(ref: str) -> Any:
    """An adapter (`engine.adapters.AdapterInfo`) from RUN_ID, RUN_ID:checkpoint-N or a folder."""
    from engine.adapters import resolve

    return resolve(ref)


def _adapter_identity(adapter: Path) -> dict[str, Any]:
    """Enough to notice retrained weights: a file's size and modification time."""
    out: dict[str, Any] = {"path": str(adapter)}
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        f = adapter / name
        if f.is_file():
            st = f.stat()
            out[name] = [st.st_size, st.st_mtime_ns]
    return out


# --------------------------------------------------------------------------- the model


class ModelSession:
    """The base model loaded once, with an optional adapter switched on or off per column.

    Adapters go through `engine.adapters.AdapterSet`, the one PEFT wrapper per loaded model that
    the Playground shares: base columns run with every adapter layer off, adapter columns with
    ours on, and what was active before is restored after each column. An adapter this session
    attached is detached again by `close`, so a model handed in (the TUI's) comes back as it was.
    """

    def __init__(self, loaded: Any, adapter: str | None = None,
                 warnings: list[str] | None = None) -> None:
        """`warnings`: what choosing the base for the adapter found (`load_session`)."""
        from engine.adapters import EXTRAS_KEY, AdapterSet

        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.adapter_info: Any = None
        self.adapter_name: str | None = None
        self.warnings: list[str] = list(warnings or [])
        self._attached_here = False
        self.adapters: Any = loaded.extras.get(EXTRAS_KEY)
        if adapter:
            self.adapter_info = resolve_adapter(adapter)
            self.adapters = AdapterSet.of(loaded)
            self._attached_here = self.adapter_info.name not in self.adapters.attached
            self.adapter_name = self.adapters.attach(self.adapter_info, activate=False)

    @property
    def adapter_dir(self) -> Path | None:
        return self.adapter_info.path if self.adapter_info is not None else None

    @property
    def model_ref(self) -> str:
        return str(self.loaded.info.location or self.loaded.info.ref)

    @contextlib.contextmanager
    def use(self, adapter: bool) -> Iterator[Any]:
        """The model to generate with: PEFT's layers live inside `loaded.model`, switched here."""
        if adapter and self.adapter_name is None:
            raise TunedeckError("This column needs an adapter: pass --adapter RUN "
                                "(a finished `tunedeck train` run) or an adapter folder.")
        if self.adapters is None:
            yield self.loaded.model
            return
        with self.adapters.using(self.adapter_name if adapter else None):
            yield self.loaded.model

    def close(self) -> None:
        if self._attached_here and self.adapter_name is not None:
            self.adapters.detach(self.adapter_name)
            self._attached_here = False


def load_session(spec: EvalSpec, loaded: Any = None, progress: Callable[[str], None] | None = None,
                 with_adapter: bool = True) -> ModelSession:
    """The model and, for adapter columns, the spec's adapter on it. With an adapter the model
    is the base it was trained against (a QLoRA adapter's 4-bit base; `spec.model` and
    `spec.quantize` override it): `loaded` is used when it is that base, else it is loaded.
    Without one, `loaded` or the spec's model (`spec.quantize` applies)."""
    from engine import models

    adapter = spec.adapter if with_adapter else None
    if not adapter:
        if loaded is None:
            quantize = None if spec.quantize in (None, "none") else spec.quantize
            loaded = models.load(spec.model, quantize=quantize, progress=progress)
        return ModelSession(loaded)
    from engine.adapter_base import ensure_base

    loaded, _plan, warnings = ensure_base(adapter, loaded, model=spec.model,
                                         quantize=spec.quantize, force=spec.force_base,
                                         progress=progress)
    if progress:
        progress(f"Loading the adapter {adapter}…")
    return ModelSession(loaded, adapter, warnings)


# --------------------------------------------------------------------------- caching


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def example_key(example: Any) -> str:
    return _hash([getattr(example, n, "") for n in
                  ("system", "instruction", "prompt", "completion", "answer", "rationale")])


def cache_path(key: str) -> Path:
    return paths.evals_dir() / "cache" / f"{key}.jsonl"


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Cached rows by example key; a half-written last line (a killed run) is ignored."""
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "key" in row:
                out[row["key"]] = row
    return out


# --------------------------------------------------------------------------- evaluating


class Evaluation:
    """Runs columns over one set of examples with one model session."""

    def __init__(self, spec: EvalSpec, session: ModelSession, data: EvalData,
                 judge: M.SqlJudge | None = None) -> None:
        self.spec = spec
        self.session = session
        self.data = data
        self.judge = judge
        if data.task == "sql" and judge is None:
            self.judge = M.SqlJudge(dialect=spec.dialect)

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()

    def template_for(self, column: Column) -> Any:
        from engine.templates import get_template

        if column.adapter:
            return get_template(self.adapter_template())
        return get_template(default_template(self.spec))

    def adapter_template(self) -> str:
        """The spec's adapter template, else the one the adapter was trained with."""
        if self.spec.adapter_template:
            return self.spec.adapter_template
        info = self.session.adapter_info
        return (getattr(info, "template", "") if info is not None else "") or ADAPTER_TEMPLATE

    def column_key(self, column: Column, template: Any) -> str:
        spec = self.spec
        identity = {
            "v": CACHE_VERSION, "model": self.session.model_ref,
            "adapter": _adapter_identity(self.session.adapter_dir)
            if (column.adapter and self.session.adapter_dir is not None) else None,
            "template": template.as_dict(), "strategy": column.strategy(spec).as_dict(),
            "kind": column.kind, "k": column.k, "loss": column.loss, "task": self.data.task,
            "labels": self.data.labels, "dialect": spec.dialect,
            "max_new_tokens": self._max_new_tokens(column),
            "shots": [example_key(e) for e in self.data.shots[:column.k]]
            if column.k else [],
            "context_window": spec.context_window,
            "sampling": [spec.samples, spec.temperature, spec.seed] if column.sampled else None,
        }
        quantization = getattr(self.session.loaded.info, "quantization", None)
        if quantization:
            identity["quantization"] = quantization
        return _hash(identity)

    def _max_new_tokens(self, column: Column) -> int:
        return self.spec.cot_max_new_tokens if column.chain_of_thought else \
            self.spec.max_new_tokens

    def build(self, column: Column, template: Any, example: Any) -> Any:
        from engine.strategies import build_prompt, example_values

        return build_prompt(template, example_values(example), self.session.tokenizer,
                            column.strategy(self.spec),
                            self.data.shots if column.k else (),
                            max_new_tokens=self._max_new_tokens(column),
                            context_window=self.spec.context_window)

    def run_column(self, column: Column, on_example: Callable[[bool], None] | None = None,
                   cancel: threading.Event | None = None) -> ColumnResult:
        """Evaluate one column; `on_example(generated)` after each example (False: cached)."""
        spec = self.spec
        template = self.template_for(column)
        key = self.column_key(column, template)
        path = cache_path(key)
        cached = read_cache(path) if spec.use_cache else {}
        keys = [example_key(e) for e in self.data.examples]
        rows: dict[str, dict[str, Any]] = {}
        for k in keys:
            if k in cached:
                rows[k] = cached[k]
                if on_example:
                    on_example(False)
        todo = [(k, e) for k, e in zip(keys, self.data.examples, strict=True) if k not in rows]
        warnings: list[str] = []
        if todo:
            built = []
            for k, example in todo:
                prompt = self.build(column, template, example)
                warnings.extend(w for w in prompt.warnings if w not in warnings)
                built.append((k, example, prompt))
            # Similar lengths together: less padding, and the batch ends with its longest prompt.
            built.sort(key=lambda item: len(item[2].input_ids))
            paths.ensure_dir(path.parent)
            per_batch = max(1, spec.batch_size // (spec.samples if column.sampled else 1))
            with self.session.use(column.adapter) as model, open(path, "a",
                                                                 encoding="utf-8") as out:
                for start in range(0, len(built), per_batch):
                    if cancel is not None and cancel.is_set():
                        break
                    batch = built[start:start + per_batch]
                    for row in self._run_batch(model, column, batch, start):
                        rows[row["key"]] = row
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                        out.flush()
                        if on_example:
                            on_example(True)
        ordered = [rows[k] for k in keys if k in rows]
        return ColumnResult(column, M.aggregate(ordered, self.data.task, self.data.labels),
                            ordered, template.name, warnings,
                            cached=sum(1 for k in keys if k in cached))

    def _run_batch(self, model: Any, column: Column, batch: list[tuple[str, Any, Any]],
                   offset: int) -> list[dict[str, Any]]:
        spec = self.spec
        tokenizer = self.session.tokenizer
        prompts = [p.input_ids for _, _, p in batch]
        started = time.perf_counter()
        outputs = generate_batch(
            model, tokenizer, prompts, self._max_new_tokens(column),
            samples=spec.samples if column.sampled else 1,
            temperature=spec.temperature if column.sampled else 0.0,
            seed=spec.seed + offset)
        latency = (time.perf_counter() - started) / len(batch)
        losses: list[tuple[float, int] | None] = [None] * len(batch)
        if column.loss:
            chat = batch[0][2].messages is not None
            refs = [str(getattr(e, "completion", "") or self.data.reference(e))
                    for _, e, _ in batch]
            losses = list(completion_losses(model, tokenizer, prompts, refs, chat))
        rows = []
        for (key, example, prompt), group, loss in zip(batch, outputs, losses, strict=True):
            rows.append(self._row(column, key, example, prompt, group, latency, loss))
        return rows

    def _row(self, column: Column, key: str, example: Any, prompt: Any,
             group: list[tuple[str, int]], latency: float,
             loss: tuple[float, int] | None) -> dict[str, Any]:
        from engine.strategies import vote

        data = self.data
        reference = data.reference(example)
        output = group[0][0]
        final = None
        extra: dict[str, Any] = {}
        if column.sampled:
            # Self-consistency over the batch's samples, each answer read the way it is scored.
            voted = vote([text for text, _ in group],
                         lambda text: M.final_answer(data.task, text, data.labels))
            final, output = voted.answer, voted.winner
            extra = {"samples": voted.completions, "agreement": voted.agreement}
        result = M.score(data.task, output, reference, labels=data.labels, judge=self.judge,
                         final=final)
        row = {
            "key": key, "line": getattr(example, "line", 0), "input": getattr(example, "prompt", ""),
            "reference": reference, "output": output, "final": result.final,
            "status": result.status, "exact": result.exact, "normalized": result.normalized,
            "detail": result.detail, "prompt_tokens": len(prompt.input_ids),
            "completion_tokens": sum(n for _, n in group) / len(group),
            "latency_s": latency, "examples_used": prompt.examples_used, **extra,
        }
        if loss is not None:
            row["loss"], row["loss_tokens"] = loss
        return row


def eta(elapsed: float, generated: int, remaining: int) -> float | None:
    if generated <= 0:
        return None
    return elapsed / generated * remaining


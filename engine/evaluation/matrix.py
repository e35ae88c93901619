"""The matrix: prompting strategies and the fine-tuned adapter on the same held-out examples.

Columns (`STANDARD_COLUMNS`): zero-shot, few-shot k = 1, 3, 5, chain-of-thought, self-consistency,
the adapter zero-shot and the adapter with few-shot examples. `run_matrix` loads the model once,
runs every column (resuming from the per-example cache), saves the result under
`paths.evals_dir()` and writes a plain-language recommendation from the numbers.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import TunedeckError
from engine.evaluation.evaluator import Evaluation, eta, load_data, load_session
from engine.evaluation.spec import Column, ColumnResult, EvalProgress, EvalSpec, Progress

STANDARD_COLUMNS: list[Column] = [
    Column("zero-shot", "zero-shot", loss=True),
    Column("few-shot k=1", "few-shot", k=1),
    Column("few-shot k=3", "few-shot", k=3),
    Column("few-shot k=5", "few-shot", k=5),
    Column("cot", "cot"),
    Column("self-consistency", "self-consistency"),
    Column("adapter", "zero-shot", adapter=True, loss=True),
    Column("adapter + few-shot k=3", "few-shot", k=3, adapter=True),
]
# Short names for the command line (`--columns zero-shot,k3,adapter`).
ALIASES = {"zero-shot": 0, "zs": 0, "k1": 1, "few-shot-1": 1, "k3": 2, "few-shot-3": 2,
           "few-shot": 2, "k5": 3, "few-shot-5": 3, "cot": 4, "sc": 5, "self-consistency": 5,
           "adapter": 6, "adapter-few-shot": 7, "adapter+k3": 7, "adapter-k3": 7}
METRIC_NAMES = {"sql": "execution accuracy", "classification": "accuracy",
                "answer": "answer accuracy", "text": "normalized match"}


def columns_from_names(names: list[str] | str | None, adapter: bool = True) -> list[Column]:
    """Columns by name or alias; None → all standard columns (adapter ones only with an adapter)."""
    if names is None or names == [] or names == "all":
        return [c for c in STANDARD_COLUMNS if adapter or not c.adapter]
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out: list[Column] = []
    by_name = {c.name: i for i, c in enumerate(STANDARD_COLUMNS)}
    for raw in names:
        name = raw.strip()
        index = ALIASES.get(name.lower(), by_name.get(name))
        if index is None:
            known = ", ".join(sorted(ALIASES))
            raise TunedeckError(f"Unknown column '{name}'. Use one of: {known}, or 'all'.")
        column = STANDARD_COLUMNS[index]
        if column not in out:
            out.append(column)
    return out


@dataclass
class MatrixResult:
    spec: EvalSpec
    task: str
    source: str
    model: str
    adapter: str | None
    columns: list[ColumnResult]
    examples: int
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recommendation: str = ""
    seconds: float = 0.0
    cancelled: bool = False
    saved_to: Path | None = None

    @property
    def metric_name(self) -> str:
        return METRIC_NAMES.get(self.task, "accuracy")

    def column(self, name: str) -> ColumnResult | None:
        return next((c for c in self.columns if c.column.name == name), None)

    def table(self) -> list[dict[str, Any]]:
        """One row per column: the numbers the screen, the CLI and the CSV show."""
        rows = []
        for result in self.columns:
            m = result.metrics
            rows.append({
                "column": result.column.name, "n": m.n, "metric": self.metric_name,
                "accuracy": round(m.accuracy, 4), "exact_match": round(m.exact_match, 4),
                "normalized_match": round(m.normalized_match, 4),
                "syntax_errors": m.syntax_errors,
                "exec_errors": m.statuses.get("exec_error", 0),
                "no_answer": m.statuses.get("no_answer", 0),
                "prompt_tokens": round(m.prompt_tokens, 1),
                "completion_tokens": round(m.completion_tokens, 1),
                "latency_s": round(m.latency_s, 3),
                "loss": round(m.loss, 4) if m.loss is not None else None,
                "perplexity": round(m.perplexity, 3) if m.perplexity is not None else None,
            })
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.as_dict(), "task": self.task, "metric": self.metric_name,
            "source": self.source, "model": self.model, "adapter": self.adapter,
            "examples": self.examples, "labels": self.labels, "seconds": round(self.seconds, 2),
            "cancelled": self.cancelled, "warnings": self.warnings,
            "recommendation": self.recommendation,
            "table": self.table(),
            "columns": [{"column": c.column.as_dict(), "template": c.template,
                         "metrics": c.metrics.as_dict(), "warnings": c.warnings,
                         "cached": c.cached, "rows": c.rows} for c in self.columns],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], saved_to: Path | None = None) -> MatrixResult:
        """A saved result (`as_dict`) back as an object, for the Evaluate screen."""
        from engine.evaluation.metrics import ColumnMetrics, ConfusionTable

        spec_fields = set(EvalSpec.__dataclass_fields__)
        columns = []
        for c in d.get("columns", []):
            m = dict(c.get("metrics", {}))
            confusion = m.pop("confusion", None)
            m.pop("syntax_errors", None)
            metrics = ColumnMetrics(**{k: v for k, v in m.items()
                                       if k in ColumnMetrics.__dataclass_fields__})
            if confusion:
                metrics.confusion = ConfusionTable(confusion["labels"], confusion["counts"])
            columns.append(ColumnResult(Column(**c["column"]), metrics, c.get("rows", []),
                                        c.get("template", ""), c.get("warnings", []),
                                        c.get("cached", 0)))
        return cls(
            spec=EvalSpec(**{k: v for k, v in d.get("spec", {}).items() if k in spec_fields}),
            task=d.get("task", "text"), source=d.get("source", ""), model=d.get("model", ""),
            adapter=d.get("adapter"), columns=columns, examples=d.get("examples", 0),
            labels=d.get("labels", []), warnings=d.get("warnings", []),
            recommendation=d.get("recommendation", ""), seconds=d.get("seconds", 0.0),
            cancelled=d.get("cancelled", False), saved_to=saved_to)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False, default=str)

    def to_csv(self) -> str:
        rows = self.table()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["column"])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def save(self, folder: Path | None = None) -> Path:
        """result.json (everything, per-example rows included) and matrix.csv."""
        if folder is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = Path(self.source.split("[")[0]).name or "eval"
            folder = paths.evals_dir() / f"{stamp}-{name}"
            n = 1
            while folder.exists():
                n += 1
                folder = paths.evals_dir() / f"{stamp}-{name}-{n}"
        paths.ensure_dir(folder)
        (folder / "result.json").write_text(self.to_json(), encoding="utf-8")
        (folder / "matrix.csv").write_text(self.to_csv(), encoding="utf-8")
        self.saved_to = folder
        return folder


# --------------------------------------------------------------------------- running


def run_matrix(spec: EvalSpec, columns: list[Column] | None = None, loaded: Any = None,
               progress: Progress | None = None, cancel: threading.Event | None = None,
               status: Any = None, save: bool = True) -> MatrixResult:
    """Every column on the same examples, the model loaded once. `loaded` reuses a loaded model
    (it is returned unchanged: an adapter is unloaded again at the end)."""
    started = time.perf_counter()
    if columns is None:
        columns = columns_from_names(None, adapter=bool(spec.adapter))
    if not columns:
        raise TunedeckError("No columns to evaluate.")
    if any(c.adapter for c in columns) and not spec.adapter:
        raise TunedeckError("Adapter columns need an adapter: pass --adapter RUN_ID (a finished "
                            "`tunedeck train` run) or an adapter folder, or leave them out.")
    data = load_data(spec, need_shots=any(c.k for c in columns))
    if status:
        status(f"{len(data.examples)} examples from {data.source} ({data.task})")
    session = load_session(spec, loaded, progress=status,
                           with_adapter=any(c.adapter for c in columns))
    evaluation = Evaluation(spec, session, data)
    results: list[ColumnResult] = []
    total = len(data.examples) * len(columns)
    counters = {"done": 0, "generated": 0}
    gen_started = time.perf_counter()
    try:
        for index, column in enumerate(columns):
            if cancel is not None and cancel.is_set():
                break

            def on_example(generated: bool, index: int = index, column: Column = column) -> None:
                counters["done"] += 1
                counters["generated"] += int(generated)
                if progress:
                    elapsed = time.perf_counter() - gen_started
                    progress(EvalProgress(column.name, index, len(columns), counters["done"],
                                          total, elapsed, eta(elapsed, counters["generated"],
                                                              total - counters["done"])))

            if progress:
                progress(EvalProgress(column.name, index, len(columns), counters["done"], total,
                                      time.perf_counter() - gen_started, None
                                      if not counters["generated"] else
                                      eta(time.perf_counter() - gen_started,
                                          counters["generated"], total - counters["done"])))
            results.append(evaluation.run_column(column, on_example, cancel))
    finally:
        evaluation.close()
        session.close()
    result = MatrixResult(
        spec=spec, task=data.task, source=data.source, model=session.loaded.info.name,
        adapter=session.adapter_info.ref if session.adapter_info is not None else None,
        columns=results, examples=len(data.examples), labels=data.labels,
        warnings=list(session.warnings),
        cancelled=bool(cancel is not None and cancel.is_set()))
    result.recommendation = recommend(result)
    result.seconds = time.perf_counter() - started
    if save:
        result.save()
    return result


def evaluate(spec: EvalSpec, column: Column, loaded: Any = None,
             progress: Progress | None = None, cancel: threading.Event | None = None,
             ) -> ColumnResult:
    """One (model, adapter?, strategy) on the test split."""
    return run_matrix(spec, [column], loaded=loaded, progress=progress, cancel=cancel).columns[0]


def load_result(path: Path | str) -> MatrixResult:
    """A saved result (result.json, or its folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "result.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return MatrixResult.from_dict(data, saved_to=path.parent)
    except OSError as err:
        raise TunedeckError(f"{path}: cannot read ({err.strerror or err}).") from None
    except (ValueError, TypeError, KeyError) as err:
        raise TunedeckError(f"{path}: not a saved evaluation ({err}).") from None


def saved_results() -> list[Path]:
    """Saved evaluation folders, newest first."""
    root = paths.evals_dir()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "result.json").is_file()]
    return sorted(found, key=lambda p: p.name, reverse=True)


# --------------------------------------------------------------------------- recommendation


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ratio_text(a: float, b: float) -> str:
    """'1/6 of' / 'the same' / '2.5× ' — a over b, for prompt tokens."""
    if b <= 0 or a <= 0:
        return "a different number of"
    r = a / b
    if 0.9 <= r <= 1.1:
        return "about the same"
    if r < 1:
        return f"1/{round(1 / r)} of the"
    return f"{r:.1f}× the"


def _verdict(bt: ColumnResult, bp: ColumnResult, diff: float, tol: float, n: int) -> str:
    """The recommendation between the best adapter and the best prompting column: none without
    enough examples, without any correct answer, or (for "better") without a paired test that
    says the difference is real."""
    from engine.evaluation.significance import ALPHA, MIN_EXAMPLES, paired_p_value

    if n < MIN_EXAMPLES:
        return (f"Not enough evidence: n={n}. Evaluate at least {MIN_EXAMPLES} examples "
                "(raise the limit) before choosing.")
    if bt.metrics.accuracy == 0 and bp.metrics.accuracy == 0:
        return ("No recommendation: neither column answered any example correctly; check the "
                "template and the metric on a few outputs (Enter on an example).")
    p, how = paired_p_value(bt, bp)
    evidence = f"p = {p:.2g}, {how}"
    if abs(diff) > tol and p < ALPHA:
        if diff > 0:
            return f"Recommendation: use the fine-tuned adapter ({evidence})."
        return (f"Recommendation: keep prompting ({bp.column.name}); the adapter needs more "
                f"training or data ({evidence}).")
    if bt.metrics.prompt_tokens < bp.metrics.prompt_tokens and diff >= -tol:
        return ("Recommendation: use the fine-tuned adapter — no measurable difference in "
                f"results ({evidence}) with shorter prompts.")
    return f"No recommendation: the difference is within noise ({evidence})."


def recommend(result: MatrixResult, tolerance: float | None = None) -> str:
    """A plain-language verdict from the table: the best column, what the adapter buys against the
    best prompting column, and the cost in prompt tokens and latency. Differences smaller than one
    example (or 2 points, or `tolerance`) count as a tie."""
    done = [c for c in result.columns if c.metrics.n]
    if not done:
        return "Nothing was evaluated."
    n = max(c.metrics.n for c in done)
    # Half an example: equal counts tie; on large sets, 2 points do too.
    tol = tolerance if tolerance is not None else max(0.5 / n, 0.02)
    metric = result.metric_name
    prompting = [c for c in done if not c.column.adapter]
    tuned = [c for c in done if c.column.adapter]

    def best(cols: list[ColumnResult]) -> ColumnResult:
        # Highest metric; among ties (within tol) the cheapest prompt.
        top = max(c.metrics.accuracy for c in cols)
        near = [c for c in cols if c.metrics.accuracy >= top - tol]
        return min(near, key=lambda c: (c.metrics.prompt_tokens, -c.metrics.accuracy))

    parts: list[str] = []
    if prompting:
        bp = best(prompting)
        parts.append(f"Best prompting: {bp.column.name} at {_pct(bp.metrics.accuracy)} {metric}"
                     f" ({bp.metrics.prompt_tokens:.0f} prompt tokens/query).")
        zero = next((c for c in prompting if c.column.name == "zero-shot"), None)
        if zero is not None and bp is not zero:
            gain = bp.metrics.accuracy - zero.metrics.accuracy
            if gain > tol:
                parts.append(f"It gains {_pct(gain)} over zero-shot for "
                             f"{_ratio_text(bp.metrics.prompt_tokens, zero.metrics.prompt_tokens)}"
                             " prompt tokens.")
    if tuned:
        bt = best(tuned)
        if prompting:
            bp = best(prompting)
            diff = bt.metrics.accuracy - bp.metrics.accuracy
            tokens = _ratio_text(bt.metrics.prompt_tokens, bp.metrics.prompt_tokens)
            if abs(diff) <= tol:
                verdict = (f"The {bt.column.name} column matches {bp.column.name} "
                           f"({_pct(bt.metrics.accuracy)} vs {_pct(bp.metrics.accuracy)}) at "
                           f"{tokens} prompt tokens")
            elif diff > 0:
                verdict = (f"The {bt.column.name} column beats {bp.column.name} by {_pct(diff)} "
                           f"({_pct(bt.metrics.accuracy)} vs {_pct(bp.metrics.accuracy)}) at "
                           f"{tokens} prompt tokens")
            else:
                verdict = (f"The {bt.column.name} column trails {bp.column.name} by "
                           f"{_pct(-diff)} ({_pct(bt.metrics.accuracy)} vs "
                           f"{_pct(bp.metrics.accuracy)}), using {tokens} prompt tokens")
            parts.append(verdict + ".")
            # The verdict first: a short screen shows the first lines of this text.
            parts.insert(0, _verdict(bt, bp, diff, tol, n))
        else:
            parts.append(f"The {bt.column.name} column scores {_pct(bt.metrics.accuracy)} "
                         f"{metric}.")
        base = next((c for c in done if c.column.name == "zero-shot"), None)
        adapter = next((c for c in tuned if c.column.name == "adapter"), None)
        if base and adapter and base.metrics.perplexity and adapter.metrics.perplexity:
            parts.append(f"Reference perplexity: {base.metrics.perplexity:.2f} (base) → "
                         f"{adapter.metrics.perplexity:.2f} (adapter).")
    elif prompting:
        parts.append("No adapter was evaluated: train one (`tunedeck train`) and pass --adapter "
                     "to compare fine-tuning.")
    small = n < 30
    if small:
        parts.append(f"Only {n} examples: one example is {_pct(1 / n)}, so small differences "
                     "are noise.")
    if result.cancelled:
        parts.append("The run was cancelled: some columns are partial.")
    return " ".join(parts)


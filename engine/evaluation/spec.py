"""What an evaluation is about, shared by the evaluator, the matrix, the screens and the CLI:
the spec (data, model, adapter, limits), a column (one strategy, with or without the adapter), a
column's result and the progress reports. It imports only the metrics: nothing here loads a
model, and the evaluator and the matrix import it, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.evaluation.metrics import ColumnMetrics


@dataclass
class EvalSpec:
    """What is evaluated, shared by every column of a matrix."""

    data: str = "sample_data/text_to_sql"  # a folder with splits, or one file
    split: str = "test"
    shots: str | None = None  # where few-shot examples come from (default: the folder's train)
    shots_split: str = "train"
    limit: int | None = None
    model: str | None = None  # default model when None
    # None: the base the adapter was trained on (engine.adapter_base), else full precision;
    # "none" | "4bit" | "8bit": an override (warns when it differs from the adapter's base)
    quantize: str | None = None
    adapter: str | None = None  # a run id / run folder / adapter folder
    force_base: bool = False  # use a base whose weights differ from the adapter's record
    template: str | None = None  # prompting columns (default: by dataset name)
    adapter_template: str | None = None  # None: the template the adapter trained with
    task: str = "auto"  # auto | sql | classification | answer | text
    dialect: str = "teradata"
    max_new_tokens: int = 128
    cot_max_new_tokens: int = 256
    batch_size: int = 8
    samples: int = 5  # self-consistency
    temperature: float = 0.7  # self-consistency sampling
    seed: int = 0
    context_window: int | None = None
    use_cache: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Column:
    """One strategy, with or without the adapter."""

    name: str
    kind: str = "zero-shot"  # a StrategyConfig kind
    k: int = 0
    adapter: bool = False
    loss: bool = False  # also measure the reference completion's loss / perplexity

    def strategy(self, spec: EvalSpec) -> Any:
        from engine.strategies import StrategyConfig

        # Sampling settings only where they change the prompt or output (they key the cache).
        if self.sampled:
            return StrategyConfig(kind=self.kind, k=self.k, samples=spec.samples, seed=spec.seed)
        return StrategyConfig(kind=self.kind, k=self.k)

    @property
    def sampled(self) -> bool:
        return self.kind == "self-consistency"

    @property
    def chain_of_thought(self) -> bool:
        from engine.strategies import CHAIN_OF_THOUGHT_KINDS

        return self.kind in CHAIN_OF_THOUGHT_KINDS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalProgress:
    column: str
    column_index: int
    columns: int
    done: int  # examples finished in all columns, cached ones included
    total: int
    elapsed_s: float
    eta_s: float | None  # None until one example has been generated

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


Progress = Callable[[EvalProgress], None]


@dataclass
class ColumnResult:
    column: Column
    metrics: ColumnMetrics
    rows: list[dict[str, Any]]  # one per example, in dataset order
    template: str = ""
    warnings: list[str] = field(default_factory=list)
    cached: int = 0  # examples read from the cache instead of generated

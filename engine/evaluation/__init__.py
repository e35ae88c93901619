"""Held-out evaluation: metrics, the evaluation runner and the prompting-vs-fine-tuning matrix.

`metrics` scores one output (SQL execution, labels, answers, text); `runner` evaluates one
(model, adapter?, strategy) column with batched generation and a per-example cache; `matrix` runs
the standard columns side by side and writes the recommendation. Importing this package is light:
torch, transformers and peft load inside the functions that generate.
"""

from engine.evaluation.matrix import (
    STANDARD_COLUMNS,
    MatrixResult,
    columns_from_names,
    load_result,
    recommend,
    run_matrix,
    saved_results,
)
from engine.evaluation.runner import Column, ColumnResult, EvalProgress, EvalSpec, evaluate

__all__ = [
    "STANDARD_COLUMNS", "Column", "ColumnResult", "EvalProgress", "EvalSpec", "MatrixResult",
    "columns_from_names", "evaluate", "load_result", "recommend", "run_matrix", "saved_results",
]

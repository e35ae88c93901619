"""Held-out evaluation: metrics, the evaluator and the prompting-vs-fine-tuning matrix.

`spec` holds what an evaluation is about (the spec, columns, results, progress) and imports no
other part; `metrics` scores one output (SQL execution, labels, answers, text); `evaluator`
evaluates one (model, adapter?, strategy) column with batched generation (`batched`) and a
per-example cache; `matrix` runs the standard columns side by side and writes the
recommendation. Importing this package is light: torch, transformers and peft load inside the
functions that generate.
"""

from engine.evaluation.matrix import (
    STANDARD_COLUMNS,
    MatrixResult,
    columns_from_names,
    evaluate,
    load_result,
    recommend,
    run_matrix,
    saved_results,
)
from engine.evaluation.spec import Column, ColumnResult, EvalProgress, EvalSpec

__all__ = [
    "STANDARD_COLUMNS", "Column", "ColumnResult", "EvalProgress", "EvalSpec", "MatrixResult",
    "columns_from_names", "evaluate", "load_result", "recommend", "run_matrix", "saved_results",
]

"""Is a difference between two evaluation columns real? Paired tests on the same examples.

Both columns answer the same held-out examples, so the honest test is McNemar's on the pairs
that disagree (exact binomial, no normal approximation: evaluations here are often a few dozen
examples). Without per-example rows (older saved results) a two-proportion z-test on the
accuracies stands in.
"""

from __future__ import annotations

import math
from typing import Any

MIN_EXAMPLES = 10  # below this no verdict: one example moves a column by 10 points or more
ALPHA = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only A right) and c (only B
    right)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def two_proportions(p1: float, p2: float, n: int) -> float:
    """Two-sided p-value of a difference between two accuracies on n examples each."""
    pooled = (p1 + p2) / 2
    se = math.sqrt(pooled * (1 - pooled) * 2 / n) if n else 0.0
    if se == 0:
        return 1.0 if p1 == p2 else 0.0
    z = abs(p1 - p2) / se
    return math.erfc(z / math.sqrt(2))


def paired_p_value(a: Any, b: Any) -> tuple[float, str]:
    """(p, how) for columns `a` and `b` (engine ColumnResult): McNemar on the examples both
    answered, else the two-proportion test on their accuracies."""
    right_a = {r["key"]: r.get("status") == "correct" for r in a.rows if "key" in r}
    right_b = {r["key"]: r.get("status") == "correct" for r in b.rows if "key" in r}
    shared = right_a.keys() & right_b.keys()
    if shared:
        only_a = sum(right_a[k] and not right_b[k] for k in shared)
        only_b = sum(right_b[k] and not right_a[k] for k in shared)
        return mcnemar_exact(only_a, only_b), f"McNemar on {len(shared)} paired examples"
    n = min(a.metrics.n, b.metrics.n)
    return two_proportions(a.metrics.accuracy, b.metrics.accuracy, n), (
        f"two-proportion test, n = {n}")

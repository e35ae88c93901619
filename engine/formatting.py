"""How tunedeck writes durations and byte sizes: one way, on screen and in the CLI."""

from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """`45s`, `1m20s`, `2h05m`; `–` when unknown (None, NaN, negative)."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "–"
    if math.isinf(seconds):
        return "∞"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def human_bytes(n: float) -> str:
    """`512 B`, `1.5 KB`, `3.2 GB` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"

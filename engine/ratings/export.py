"""Training sets made from ratings: TRL's SFT, DPO and KTO layouts, and the report of each.

Exports use TRL's field names: SFT ``prompt``/``completion``, DPO ``prompt``/``chosen``/
``rejected``, KTO ``prompt``/``completion``/``label``; conversational (lists of
``{"role", "content"}``) when the completions came through a chat template. Each export comes with
a report of what went in and what was left out, and why. The file is written through
`engine.safe_write`: an existing one is replaced only with ``force``, a folder gets
``ratings-<format>.jsonl`` inside it, and the history database itself is never a target.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError
from engine.ratings.schema import BAD_STARS, FORMATS, GOOD_STARS, Completion, Pair


def write_export(fmt: str, out: Path, rows_from: Callable[[], tuple[list, list]], *,
                 force: bool = False, database: Path | None = None,
                 **options: Any) -> ExportReport:
    """Check the target, build the rows (`rows_from()` gives the completions and pairs) and write
    them as JSONL through a temporary file; returns the report, its `path` set."""
    from engine.safe_write import check_target, output_file

    protected = [database, Path(f"{database}-wal"), Path(f"{database}-shm")] if database else []
    target = check_target(out, force=force, inputs=protected,
                          default_name=f"ratings-{fmt}.jsonl", what=f"{fmt.upper()} export")
    completions, pairs = rows_from()
    rows, report = build_export(fmt, completions, pairs, **options)
    with output_file(target) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    report.path = str(target)
    return report


@dataclass
class ExportReport:
    format: str
    rows: int = 0
    conversational: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # where the rows came from
    left_out: dict[str, int] = field(default_factory=dict)  # reason → items
    path: str | None = None

    def leave_out(self, reason: str, n: int = 1) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + n

    def add(self, origin: str, n: int = 1) -> None:
        self.counts[origin] = self.counts.get(origin, 0) + n

    def text(self) -> str:
        style = "conversational" if self.conversational else "plain text"
        lines = [f"{self.format.upper()}: {self.rows} rows ({style})"
                 + (f" → {self.path}" if self.path else "")]
        lines += [f"  from {origin}: {n}" for origin, n in self.counts.items()]
        if self.left_out:
            lines.append(f"left out: {sum(self.left_out.values())}")
            lines += [f"  {n} × {reason}" for reason, n in
                      sorted(self.left_out.items(), key=lambda kv: -kv[1])]
        else:
            lines.append("left out: nothing")
        return "\n".join(lines)


def _prompt_and(source: Completion, conversational: bool, /, **texts: str) -> dict[str, Any]:
    """A row for one prompt: chat messages or the exact prompt text, plus its answer fields."""
    if conversational:
        row: dict[str, Any] = {"prompt": source.messages}
        row.update({k: [{"role": "assistant", "content": v}] for k, v in texts.items()})
    else:
        row = {"prompt": source.prompt_text or source.prompt, **texts}
    return row


def _style(items: list[Completion], style: str) -> bool:
    if style not in ("auto", "chat", "text"):
        raise TunedeckError(f"style: {style!r} must be auto, chat or text.")
    if style != "auto":
        return style == "chat"
    chat = sum(1 for c in items if c.messages is not None)
    return chat > 0 and chat >= len(items) - chat


def build_export(fmt: str, completions: list[Completion], pairs: list[Pair],
                 style: str = "auto", good_stars: int = GOOD_STARS,
                 bad_stars: int = BAD_STARS) -> tuple[list[dict[str, Any]], ExportReport]:
    """Rows in TRL's format `fmt` (sft | dpo | kto) and the report of what went in and out."""
    if fmt not in FORMATS:
        raise TunedeckError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    if not 1 <= bad_stars < good_stars <= 5:
        raise TunedeckError(f"star thresholds: need 1 <= bad ({bad_stars}) < good ({good_stars})"
                            " <= 5.")
    report = ExportReport(format=fmt)
    relevant = [c for c in completions if c.rated] + [p.a for p in pairs if p.rated]
    conversational = _style(relevant, style)
    report.conversational = conversational

    def usable(c: Completion) -> bool:
        if conversational and c.messages is None:
            report.leave_out("no chat messages (plain-text prompt in a conversational export)")
            return False
        if not conversational and not (c.prompt_text or c.prompt):
            report.leave_out("empty prompt")
            return False
        return True

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()

    def emit(origin: str, row: dict[str, Any]) -> None:
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key in seen:
            report.leave_out("duplicate row")
            return
        seen.add(key)
        rows.append(row)
        report.add(origin)

    paired = {i for p in pairs for i in (p.a.id, p.b.id)}
    singles = [c for c in completions if c.id not in paired or c.rated]
    if fmt == "sft":
        _sft(singles, emit, usable, report, good_stars, bad_stars, conversational)
    elif fmt == "kto":
        _kto(singles, emit, usable, report, good_stars, bad_stars, conversational)
    else:
        _dpo(singles, pairs, emit, usable, report, good_stars, bad_stars, conversational)
    report.rows = len(rows)
    return rows, report


def _why_not(c: Completion, good: int, bad: int) -> str:
    r = c.rating
    if not r.judged:
        return "not rated"
    if r.thumbs is not None:
        return "thumbs down" if r.thumbs < 0 else "thumbs up"
    if r.stars is not None:
        return f"{r.stars} stars (below {good})" if r.stars < good else f"{r.stars} stars"
    return "no thumbs or stars"


def _sft(items, emit, usable, report, good, bad, chat) -> None:
    for c in items:
        r = c.rating
        if r.ideal:
            if usable(c):
                emit("corrected completions", _prompt_and(c, chat, completion=r.ideal))
        elif r.verdict(good, bad) is True:
            if usable(c):
                emit("accepted completions", _prompt_and(c, chat, completion=c.completion))
        else:
            report.leave_out(f"not accepted: {_why_not(c, good, bad)}")


def _kto(items, emit, usable, report, good, bad, chat) -> None:
    for c in items:
        r = c.rating
        verdict = r.verdict(good, bad)
        if not r.judged:
            report.leave_out("not rated")
            continue
        if not usable(c):
            continue
        if r.ideal:
            emit("corrected completions (desirable)",
                 _prompt_and(c, chat, completion=r.ideal) | {"label": True})
        if verdict is None:
            if not r.ideal:
                report.leave_out(f"neutral: {r.stars} stars (between {bad} and {good})"
                                 if r.stars is not None else "no thumbs or stars")
            continue
        if r.ideal and r.ideal.strip() == c.completion.strip():
            continue
        origin = "thumbs" if r.thumbs is not None else "stars"
        emit(f"{origin} ({'desirable' if verdict else 'undesirable'})",
             _prompt_and(c, chat, completion=c.completion) | {"label": verdict})


def _dpo(items, pairs, emit, usable, report, good, bad, chat) -> None:
    for p in pairs:
        if p.choice is None:
            report.leave_out("A/B pair not yet chosen")
        elif p.choice == "tie":
            report.leave_out("A/B tie")
        elif usable(p.a):
            win, lose = (p.a, p.b) if p.choice == "a" else (p.b, p.a)
            emit("A/B choices", _prompt_and(p.a, chat, chosen=win.completion,
                                            rejected=lose.completion))
    groups: dict[str, list[Completion]] = defaultdict(list)
    for c in items:
        if c.rating.stars is not None:
            groups[c.prompt_key()].append(c)
    used: set[int] = set()
    for group in groups.values():
        for i, x in enumerate(group):
            for y in group[i + 1:]:
                if x.rating.stars == y.rating.stars or x.completion == y.completion:
                    continue
                win, lose = (x, y) if x.rating.stars > y.rating.stars else (y, x)
                if usable(win):
                    emit("star differences", _prompt_and(win, chat, chosen=win.completion,
                                                         rejected=lose.completion))
                used.update((x.id, y.id))
    for c in items:
        r = c.rating
        # A correction of an answer that was not accepted says "this, not that".
        if r.ideal and r.ideal.strip() != c.completion.strip() and r.verdict(good, bad) is not True:
            if usable(c):
                emit("corrections", _prompt_and(c, chat, chosen=r.ideal, rejected=c.completion))
            used.add(c.id)
    for c in items:
        if c.id in used:
            continue
        if not c.rated:
            report.leave_out("not rated")
        elif c.rating.stars is not None:
            others = len(groups[c.prompt_key()]) - 1
            report.leave_out("no other starred completion of its prompt" if not others
                             else "same stars as every other completion of its prompt")
        else:
            report.leave_out(f"{_why_not(c, good, bad)} with no pair or correction to compare")

"""`tunedeck data`: check, inspect and split datasets headless.

    tunedeck data check FILE [--map a=prompt,…] [--model M] [--max-len N] [--strict]
    tunedeck data stats FILE [--map …] [--model M]
    tunedeck data split FILE --out DIR [--seed N] [--ratios 0.8,0.1,0.1] [--force]
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.console import console

SHOWN_PER_CODE = 10  # problems of one kind listed before the rest are counted


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check, inspect and split datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="JSONL / JSON / CSV / Parquet file, a dataset folder "
                       "(train.jsonl …), a save_to_disk folder, or a hub id")
        p.add_argument("--map", default=None, metavar="THEIRS=OURS,…",
                       help="rename columns, e.g. question=prompt,answer=completion")
        p.add_argument("--split", default=None, help="split of a dataset folder (default train)")
        p.add_argument("--model", default=None,
                       help="model whose tokenizer counts tokens (default: the default model)")

    check = sub.add_parser("check", help="validate a dataset and list every problem")
    common(check)
    check.add_argument("--max-len", type=int, default=None, metavar="N",
                       help="report rows whose prompt + completion exceed N tokens")
    check.add_argument("--overlong", choices=("error", "truncate", "skip"), default="error",
                       help="what happens to rows over --max-len (default: error)")
    check.add_argument("--max-line-bytes", type=int, default=None, metavar="N",
                       help="longest JSONL line read (default 1,000,000 bytes)")
    check.add_argument("--all", action="store_true",
                       help=f"list every problem, not the first {SHOWN_PER_CODE} of each kind")
    check.add_argument("--strict", action="store_true",
                       help="exit 1 on any problem, warnings included")
    check.set_defaults(func=run_check)

    stats = sub.add_parser("stats", help="token lengths, histogram, labels, duplicates")
    common(stats)
    stats.add_argument("--bins", type=int, default=10, help="histogram bins (default 10)")
    stats.set_defaults(func=run_stats)

    split = sub.add_parser("split", help="seeded train / validation / test split")
    common(split)
    split.add_argument("--out", required=True, help="folder for train/validation/test.jsonl")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--ratios", default="0.8,0.1,0.1", help="three shares (default 0.8,0.1,0.1)")
    split.add_argument("--force", action="store_true",
                       help="replace train/validation/test.jsonl already in --out (never the input)")
    split.set_defaults(func=run_split)


def _tokenizer(model: str | None) -> Any:
    from engine import models

    return models.load_tokenizer(model or models.DEFAULT_MODEL)


def run_check(args: argparse.Namespace) -> int:
    from engine import data

    out = console()
    tokenizer = _tokenizer(args.model) if args.max_len else None
    kwargs: dict[str, Any] = {}
    if args.max_line_bytes:
        kwargs["max_line_bytes"] = args.max_line_bytes
    report = data.validate(args.file, mapping=data.parse_mapping(args.map), split=args.split,
                           tokenizer=tokenizer, max_len=args.max_len, overlong=args.overlong,
                           **kwargs)
    print_report(out, report, None if args.all else SHOWN_PER_CODE)
    if not report.ok:
        return 1
    return 1 if args.strict and report.issues else 0


def print_report(out: Any, report: Any, per_code: int | None = SHOWN_PER_CODE) -> None:
    """One line per problem; past `per_code` of one kind, a count instead of more lines."""
    from collections import Counter

    from rich.markup import escape

    shown: Counter[str] = Counter()
    for issue in report.issues:
        shown[issue.code] += 1
        if per_code is not None and shown[issue.code] > per_code:
            continue
        style = "red" if issue.severity == "error" else "yellow"
        fld = f" [bold]\\[{escape(issue.field)}][/]" if issue.field else ""
        out.print(f"{escape(issue.location())}{fld}: [{style}]{issue.severity}[/]: "
                  f"{escape(issue.message)} [dim]— fix: {escape(issue.fix)}[/]", soft_wrap=True)
    for code, total in report.counts.most_common():
        hidden = total - min(total, per_code if per_code is not None else total)
        if hidden:
            out.print(f"… {hidden:,} more '{code.replace('_', ' ')}' problems not shown "
                      "(--all lists them)")
    style = "green" if report.clean else ("yellow" if report.ok else "red")
    out.print(f"[{style}]{escape(report.summary())}[/]", soft_wrap=True)


def run_stats(args: argparse.Namespace) -> int:
    from rich.table import Table

    from engine import data

    out = console()
    report = data.validate(args.file, mapping=data.parse_mapping(args.map), split=args.split,
                           keep=10**9)
    examples = report.examples
    if not examples:
        print_report(out, report)
        return 1
    stats = data.compute_stats(examples, _tokenizer(args.model), bins=args.bins, report=report)
    out.print(f"{report.path}: {stats.rows:,} usable rows of {report.rows:,}, schema "
              f"{report.schema}, {stats.duplicates:,} exact duplicates")
    table = Table(title=f"tokens (chat template adds {stats.template_overhead})",
                  title_justify="left")
    for column in ("", "min", "median", "p95", "max", "mean"):
        table.add_column(column, justify="right")
    for name, s in (("prompt", stats.prompt_tokens), ("completion", stats.completion_tokens),
                    ("total", stats.total_tokens)):
        table.add_row(name, str(s.min), f"{s.median:g}", str(s.p95), str(s.max), f"{s.mean:.1f}")
    out.print(table)
    peak = max((c for _, _, c in stats.histogram), default=0) or 1
    out.print("total tokens per row")
    for low, high, count in stats.histogram:
        bar = "█" * round(40 * count / peak)
        out.print(f"  {low:>6}–{high:<6} {bar} {count}")
    if stats.labels:
        out.print("labels")
        for label, count in stats.labels.items():
            out.print(f"  {label:<20} {count:>6}  {100 * count / stats.rows:5.1f}%")
    if not report.ok:
        out.print(f"[yellow]{report.rows - report.usable:,} rows were not usable; run "
                  f"`tunedeck data check {args.file}`[/]")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine import data
    from engine.errors import TunedeckError

    try:
        ratios = [float(x) for x in args.ratios.split(",")]
    except ValueError as err:
        raise TunedeckError("--ratios: write three numbers, e.g. 0.8,0.1,0.1") from err
    from engine.safe_write import check_target

    source = data.open_source(args.file, args.split).path
    names = ("train", "validation", "test")
    if Path(args.out).expanduser().is_file():
        raise TunedeckError(f"--out {args.out}: is a file; give a folder for "
                            "train/validation/test.jsonl")
    # Every target is checked before anything is written: no half-replaced set of splits.
    targets = {name: check_target(Path(args.out) / f"{name}.jsonl", force=args.force,
                                  inputs=[source], what=f"{name} split") for name in names}
    examples = data.load_examples(args.file, mapping=data.parse_mapping(args.map),
                                  split=args.split)
    parts = data.split_examples(examples, ratios=ratios, seed=args.seed, names=names)
    fields = [f for f in ("system", "instruction", "prompt", "rationale", "answer", "completion",
                          "chosen", "rejected") if any(getattr(e, f) for e in examples)]
    out = console()
    for name, rows in parts.items():
        path = data.write_jsonl(rows, targets[name], fields=fields)
        out.print(f"{name}: {len(rows):,} rows → {path}")
    leaks = data.leakage(parts)
    out.print(f"exact-duplicate leakage across splits: {len(leaks)}")
    return 0

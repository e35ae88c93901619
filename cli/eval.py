"""`tunedeck eval`: score one strategy (optionally with a trained adapter) on a held-out split.
`tunedeck eval matrix`: every prompting strategy and the adapter side by side, with a verdict.

Progress (with ETA) goes to stderr; the table, JSON or CSV to stdout, so
`tunedeck eval matrix --format csv > matrix.csv` keeps only the data. Results are also saved under
the data home (`evals/`), and a repeated run reads finished examples from the cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError

STRATEGIES = ("zero-shot", "few-shot", "cot", "self-consistency")
FORMATS = ("table", "json", "csv")


def _common(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Options both `eval` and `eval matrix` take. The matrix parser suppresses its defaults so
    an option given before the word `matrix` is not reset by it."""

    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--data", default=d("sample_data/text_to_sql"),
                   help="a dataset folder with train/test splits, or one file "
                   "(default: sample_data/text_to_sql)")
    p.add_argument("--split", default=d("test"), help="the split evaluated (default: test)")
    p.add_argument("--shots", default=d(None),
                   help="where few-shot examples come from (default: the folder's train split)")
    p.add_argument("--limit", type=int, default=d(None), help="only the first N examples")
    p.add_argument("--model", "-m", default=argparse.SUPPRESS,
                   help="model reference (default: smollm2-135m-instruct, or the adapter's base)")
    p.add_argument("--quantize", choices=("none", "4bit", "8bit"), default=d(None),
                   help="how to load the base (default: as the adapter was trained, e.g. 4-bit "
                   "for QLoRA, else full precision; with an adapter, an override warns)")
    p.add_argument("--force-base", action="store_true", default=d(False),
                   help="use --model even if its weights differ from the adapter's base")
    p.add_argument("--adapter", "-a", default=d(None),
                   help="a trained adapter: RUN_ID, RUN_ID:checkpoint-N or a folder")
    p.add_argument("--template", "-t", default=d(None),
                   help="template for the prompting columns (default: the dataset's own)")
    p.add_argument("--adapter-template", default=d(None),
                   help="template for adapter columns (default: the one the adapter trained "
                   "with: its run's `template`, else instruction)")
    p.add_argument("--task", default=d("auto"),
                   choices=("auto", "sql", "classification", "answer", "text"),
                   help="how outputs are scored (default: detected from the data)")
    p.add_argument("--dialect", default=d("teradata"),
                   help="SQL dialect of the dataset, for sqlglot (default: teradata)")
    p.add_argument("--max-new-tokens", type=int, default=d(128))
    p.add_argument("--cot-max-new-tokens", type=int, default=d(256),
                   help="room for reasoning in chain-of-thought columns (default 256)")
    p.add_argument("--batch-size", type=int, default=d(8))
    p.add_argument("--samples", type=int, default=d(5), help="self-consistency samples")
    p.add_argument("--temperature", type=float, default=d(0.7),
                   help="self-consistency sampling temperature")
    p.add_argument("--seed", type=int, default=d(0))
    p.add_argument("--format", "-f", choices=FORMATS, default=d("table"))
    p.add_argument("--output", "-o", type=Path, default=d(None),
                   help="also write the JSON / CSV to this file")
    p.add_argument("--force", action="store_true", default=d(False),
                   help="replace the --output file if it exists")
    p.add_argument("--no-cache", action="store_true", default=d(False),
                   help="generate every example again instead of reading the cache")
    p.add_argument("--quiet", "-q", action="store_true", default=d(False),
                   help="no progress on stderr")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a strategy or an adapter on held-out data (and `eval matrix`)",
        description="Score one prompting strategy, optionally with a trained adapter, on a "
        "held-out split: execution accuracy for SQL, label accuracy with a confusion table, "
        "answer accuracy, exact / normalized match, prompt tokens and latency per query. "
        "`tunedeck eval matrix` runs every strategy and the adapter side by side.")
    _common(p, defaults=True)
    p.add_argument("--strategy", "-s", choices=STRATEGIES, default="zero-shot")
    p.add_argument("--k", type=int, default=3, help="few-shot examples (default 3)")
    p.set_defaults(func=run, eval_command=None)
    sub = p.add_subparsers(dest="eval_command", metavar="matrix")
    m = sub.add_parser(
        "matrix", help="zero-shot, few-shot k=1/3/5, CoT, self-consistency, adapter, "
        "adapter + few-shot",
        description="Run the evaluation matrix on the same examples and print the table and a "
        "plain-language recommendation. Adapter columns need --adapter.")
    _common(m, defaults=False)
    m.add_argument("--columns", "-c", default=None,
                   help="comma-separated columns: zero-shot,k1,k3,k5,cot,sc,adapter,adapter-k3 "
                   "(default: all; the adapter ones only with --adapter)")
    m.set_defaults(func=run_matrix_command)


def _spec(args: argparse.Namespace) -> Any:
    from engine.evaluation import EvalSpec

    for name in ("limit", "batch_size", "samples", "max_new_tokens", "cot_max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise TunedeckError(f"--{name.replace('_', '-')} must be at least 1, not {value}.")
    return EvalSpec(
        data=args.data, split=args.split, shots=args.shots, limit=args.limit,
        model=getattr(args, "model", None), quantize=args.quantize, adapter=args.adapter,
        force_base=args.force_base,
        template=args.template,
        adapter_template=args.adapter_template, task=args.task, dialect=args.dialect,
        max_new_tokens=args.max_new_tokens, cot_max_new_tokens=args.cot_max_new_tokens,
        batch_size=args.batch_size, samples=args.samples, temperature=args.temperature,
        seed=args.seed, use_cache=not args.no_cache)


class _ProgressLine:
    """One progress line on stderr (rewritten in place on a terminal, every 10% otherwise)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_tenth = -1

    def status(self, text: str) -> None:
        if not self.quiet:
            self._clear()
            print(text, file=sys.stderr, flush=True)

    def __call__(self, p: Any) -> None:
        from engine.formatting import duration

        if self.quiet:
            return
        line = (f"[{p.column_index + 1}/{p.columns}] {p.column}: {p.done}/{p.total} "
                f"({100 * p.fraction:.0f}%)  ETA {duration(p.eta_s)}")
        if self.tty:
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
            return
        tenth = int(10 * p.fraction)
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            print(line, file=sys.stderr, flush=True)

    def _clear(self) -> None:
        if self.tty:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if not self.quiet and self.tty:
            print(file=sys.stderr)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def print_table(result: Any) -> None:
    from rich import box
    from rich.table import Table

    from cli.console import console

    out = console()
    table = Table(title=f"{result.source}: {result.examples} examples, acc = {result.metric_name}"
                  f" ({result.model}{' + ' + result.adapter if result.adapter else ''})",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("column", no_wrap=True)
    # Short headers keep all of it on an 80-column terminal; the title names the metric.
    headers = ["acc", "norm"]
    if result.task == "sql":
        headers += ["syntax", "failed"]
    headers += ["tok/q", "s/q", "ppl"]
    for header in headers:
        table.add_column(header, justify="right")
    for row in result.table():
        cells = [row["column"], _pct(row["accuracy"]), _pct(row["normalized_match"])]
        if result.task == "sql":
            cells += [str(row["syntax_errors"]), str(row["exec_errors"])]
        cells += [f"{row['prompt_tokens']:.0f}", f"{row['latency_s']:.2f}",
                  f"{row['perplexity']:.2f}" if row["perplexity"] is not None else "–"]
        table.add_row(*cells)
    out.print(table)
    for column in result.columns:
        if column.metrics.confusion is not None:
            confusion = Table(title=f"confusion: {column.column.name}", show_header=True)
            rows = column.metrics.confusion.rows()
            for name in rows[0]:
                confusion.add_column(name, justify="right")
            for r in rows[1:]:
                confusion.add_row(*r)
            out.print(confusion)
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    for column in result.columns:
        for warning in column.warnings:
            out.print(f"[yellow]warning ({column.column.name}):[/] {warning}")
    out.print(result.recommendation)
    if result.saved_to:
        out.print(f"[dim]saved to {result.saved_to}[/]")


def _emit(result: Any, args: argparse.Namespace) -> int:
    text = None
    if args.format == "json":
        text = result.to_json()
    elif args.format == "csv":
        text = result.to_csv()
    if text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        print_table(result)
    if args.output:
        from engine.safe_write import output_file

        data = text if text is not None else result.to_json()
        with output_file(args.output) as fh:
            fh.write(data)
    return 0


def _run(args: argparse.Namespace, columns: Any) -> int:
    import threading

    from engine.evaluation import run_matrix

    if args.output:  # refused now, not after minutes of generation
        from engine.safe_write import check_target

        name = f"matrix.{'csv' if args.format == 'csv' else 'json'}"
        data = Path(args.data)
        inputs = [f for f in data.iterdir() if f.is_file()] if data.is_dir() else [data]
        args.output = check_target(args.output, force=args.force, inputs=inputs,
                                   default_name=name, what="--output")
    spec = _spec(args)
    progress = _ProgressLine(args.quiet)
    cancel = threading.Event()
    try:
        result = run_matrix(spec, columns, progress=progress, status=progress.status,
                            cancel=cancel)
    finally:
        progress.done()
    return _emit(result, args)


def run(args: argparse.Namespace) -> int:
    from engine.evaluation import Column

    name = args.strategy if args.strategy != "few-shot" else f"few-shot k={args.k}"
    if args.adapter:
        name = "adapter" if args.strategy == "zero-shot" else f"adapter + {name}"
    k = args.k if args.strategy == "few-shot" else 0
    column = Column(name, args.strategy, k=k, adapter=bool(args.adapter),
                    loss=args.strategy == "zero-shot")
    return _run(args, [column])


def run_matrix_command(args: argparse.Namespace) -> int:
    from engine.evaluation import columns_from_names

    columns = columns_from_names(args.columns, adapter=bool(args.adapter))
    return _run(args, columns)

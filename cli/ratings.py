"""`tunedeck ratings`: list, rate, import and export human judgments of completions.

    tunedeck ratings list [--source try|sample|eval|ab|manual] [--unrated]
    tunedeck ratings import --tries | --run RUN_ID
    tunedeck ratings rate ID [--stars N] [--up | --down] [--ideal TEXT] [--comment TEXT]
    tunedeck ratings choose PAIR_ID a|b|tie
    tunedeck ratings export --format sft|dpo|kto OUT.jsonl|FOLDER [--force]
"""

from __future__ import annotations

import argparse

from cli.console import console
from cli.listing import Column, add_format, emit
from engine.errors import TunedeckError
from engine.ratings.schema import SOURCES  # light: the package loads its store lazily


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ratings", help="rate completions; export SFT / DPO / KTO data")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="the rating queue with each item's rating")
    p.add_argument("--source", choices=SOURCES, help="only completions from this source")
    p.add_argument("--unrated", action="store_true", help="only items not rated yet")
    p.add_argument("--limit", type=int, default=200, help="at most this many rows (default 200)")
    add_format(p)

    p = sub.add_parser("import", help="add playground tries or a run's samples to the queue")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--tries", action="store_true", help="every playground try")
    what.add_argument("--run", metavar="RUN_ID", help="the sample completions of a training run")

    p = sub.add_parser("rate", help="rate one completion by id")
    p.add_argument("id", type=int)
    p.add_argument("--stars", type=int, choices=range(1, 6), metavar="1-5")
    thumbs = p.add_mutually_exclusive_group()
    thumbs.add_argument("--up", action="store_const", const=1, dest="thumbs")
    thumbs.add_argument("--down", action="store_const", const=-1, dest="thumbs")
    p.add_argument("--ideal", help="the corrected, ideal completion")
    p.add_argument("--comment")

    p = sub.add_parser("choose", help="record the winner of an A/B pair")
    p.add_argument("id", type=int)
    p.add_argument("choice", choices=("a", "b", "tie"))

    p = sub.add_parser("export", help="write a TRL training set from the ratings")
    p.add_argument("--format", required=True, choices=("sft", "dpo", "kto"), dest="fmt",
                   help="sft: prompt/completion; dpo: prompt/chosen/rejected; "
                   "kto: prompt/completion/label")
    p.add_argument("out", metavar="OUT.jsonl")
    p.add_argument("--style", choices=("auto", "chat", "text"), default="auto",
                   help="conversational messages or plain text (default: as the sources were)")
    p.add_argument("--good-stars", type=int, default=4, help="stars that accept (default 4)")
    p.add_argument("--bad-stars", type=int, default=2, help="stars that reject (default 2)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.ratings import RatingStore

    with RatingStore() as store:
        return {"list": _list, "import": _import, "rate": _rate, "choose": _choose,
                "export": _export}[args.action](store, args)


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_rating(item) -> str:
    if item.kind == "pair":
        return {"a": "A wins", "b": "B wins", "tie": "tie", None: "–"}[item.choice]
    r = item.rating
    parts = []
    if r.thumbs is not None:
        parts.append("+" if r.thumbs > 0 else "−")
    if r.stars is not None:
        parts.append("★" * r.stars)
    if r.ideal:
        parts.append("edited")
    return " ".join(parts) or "–"


RATING_COLUMNS = [
    Column("item", "item", key_column=True),
    Column("source", "source", drop=2),
    Column("model", "model", shrink=True, drop=3),
    Column("prompt", "prompt_short", shrink=True, drop=1),
    Column("completion", "completion_short", shrink=True),
    Column("rating", "rating_label"),
]


def _list(store, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    items = store.queue(args.source, unrated_only=args.unrated)
    rated, total = store.progress(args.source)
    if args.list_format == "json":
        records = [{"kind": item.kind} | asdict(item) for item in items[: args.limit]]
        return emit(records, RATING_COLUMNS, fmt="json", title="", empty="")
    rows = []
    for item in items[: args.limit]:
        if item.kind == "pair":
            rows.append({"item": f"pair {item.id}", "source": "ab", "model": item.a.model,
                         "prompt_short": _short(item.prompt),
                         "completion_short": f"A: {_short(item.a.completion, 22)} | "
                                             f"B: {_short(item.b.completion, 22)}",
                         "rating_label": describe_rating(item)})
        else:
            rows.append({"item": str(item.id), "source": item.source, "model": item.model,
                         "prompt_short": _short(item.prompt),
                         "completion_short": _short(item.completion),
                         "rating_label": describe_rating(item)})
    more = (f"… {len(items) - args.limit} more (--limit)" if len(items) > args.limit else None)
    return emit(rows, RATING_COLUMNS, fmt="table", title=f"Ratings: {rated} / {total} rated",
                empty=f"Ratings: {rated} / {total} rated; nothing to list.", footer=more)


def _import(store, args: argparse.Namespace) -> int:
    ids = store.import_tries() if args.tries else store.import_run_samples(args.run)
    console().print(f"{len(ids)} completions in the rating queue "
                    f"({'playground tries' if args.tries else f'samples of run {args.run}'}).")
    return 0


def _rate(store, args: argparse.Namespace) -> int:
    fields = {k: v for k, v in (("stars", args.stars), ("thumbs", args.thumbs),
                                ("ideal", args.ideal), ("comment", args.comment)) if v is not None}
    if not fields:
        raise TunedeckError("Nothing to record: give --stars, --up/--down, --ideal or --comment.")
    store.rate(args.id, **fields)
    console().print(f"completion {args.id}: {describe_rating(store.get_completion(args.id))}")
    return 0


def _choose(store, args: argparse.Namespace) -> int:
    store.choose(args.id, args.choice)
    console().print(f"pair {args.id}: {describe_rating(store.get_pair(args.id))}")
    return 0


def _export(store, args: argparse.Namespace) -> int:
    from pathlib import Path

    report = store.export(args.fmt, Path(args.out), force=args.force, style=args.style,
                          good_stars=args.good_stars, bad_stars=args.bad_stars)
    console().print(report.text())
    return 0 if report.rows else 1

"""`tunedeck prompt`: run one prompt through a template and strategy, streaming to stdout.
`tunedeck history`: list, show and export the recorded tries.

The completion goes to stdout as it is generated; warnings, the answer vote and timings go to
stderr, so `tunedeck prompt … > out.txt` keeps only model text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.errors import TunedeckError


def register(subparsers: argparse._SubParsersAction) -> None:
    from engine.strategies import KINDS, SELECTIONS

    p = subparsers.add_parser(
        "prompt", help="run a prompt (template + strategy) and stream the completion",
        description="Render a template with a prompting strategy, stream the model's completion "
        "to stdout and record the try in the history.")
    p.add_argument("--template", "-t", default="instruction",
                   help="template name or a .yaml file (default: instruction; "
                   "see --list-templates)")
    p.add_argument("--strategy", "-s", default="zero-shot", choices=KINDS)
    p.add_argument("--k", type=int, default=3, help="few-shot examples (default 3)")
    p.add_argument("--selection", default="first", choices=SELECTIONS,
                   help="how examples are chosen: first k, seeded random, or BM25-similar")
    p.add_argument("--seed", type=int, default=0, help="seed for random example selection and "
                   "sampling")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset with the few-shot examples (JSONL, CSV, Parquet)")
    p.add_argument("--input", "-i", default=None,
                   help="the input (the template's 'prompt' variable); '-' reads stdin")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="another template variable, e.g. --var instruction='…' (repeatable)")
    p.add_argument("--model", "-m", default=argparse.SUPPRESS,
                   help="model reference (default: smollm2-135m-instruct)")
    p.add_argument("--adapter", "-a", default=None,
                   help="a trained adapter: a run id (RUN:checkpoint-N, RUN:latest) or a folder; "
                   "it is loaded on the base it was trained on (a QLoRA adapter's 4-bit base)")
    p.add_argument("--quantize", choices=("none", "4bit", "8bit"), default=None,
                   help="load the base this way instead (default: as the adapter was trained; "
                   "an override warns)")
    p.add_argument("--force-base", action="store_true",
                   help="use --model even if its weights differ from the adapter's base")
    p.add_argument("--mode", choices=("auto", "chat", "raw"), default="auto",
                   help="chat template or raw completion (auto: chat when the model has one)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default; self-consistency defaults to 0.7)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--samples", type=int, default=5, help="self-consistency samples (default 5)")
    p.add_argument("--cot-trigger", default="Let's think step by step.")
    p.add_argument("--answer-pattern", default=None,
                   help="regex for the final answer (group 1 if any); default: an 'Answer:' line")
    p.add_argument("--show-prompt", action="store_true",
                   help="print the exact prompt text to stderr first")
    p.add_argument("--no-save", action="store_true", help="do not record the try in the history")
    p.add_argument("--list-templates", action="store_true", help="list templates and exit")
    p.set_defaults(func=run)

    h = subparsers.add_parser("history", help="list, show or export recorded prompt tries")
    h.add_argument("action", nargs="?", default="list", choices=("list", "show", "export"))
    h.add_argument("target", nargs="?", default=None,
                   help="show: a try id; export: the output .jsonl file")
    h.add_argument("--search", default=None, help="list: only tries mentioning this text")
    h.add_argument("--force", action="store_true",
                   help="export: replace the output file if it exists")
    h.add_argument("--limit", type=int, default=20)
    h.add_argument("--format", choices=("table", "json"), default="table", dest="list_format",
                   help="list / show: lines (default) or json, for scripts")
    h.set_defaults(func=run_history)


# --------------------------------------------------------------------------- prompt


def _values(args: argparse.Namespace) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise TunedeckError(f"--var {item!r}: write it as NAME=VALUE, e.g. "
                                "--var instruction='Answer briefly.'")
        values[name.strip()] = value
    if args.input is not None:
        values["prompt"] = sys.stdin.read().rstrip("\n") if args.input == "-" else args.input
    return values


def _list_templates() -> int:
    from cli.console import console
    from engine.templates import is_builtin, load_templates

    out = console()
    errors: list[TunedeckError] = []
    for t in load_templates(errors):
        kind = "built-in" if is_builtin(t.name) else "user"
        out.print(f"[bold]{t.name}[/] ({kind}): {t.description or 'no description'}\n"
                  f"    variables: {', '.join(t.variables()) or 'none'}")
    for err in errors:
        print(f"tunedeck: {err}", file=sys.stderr)
    return 1 if errors else 0


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _stream(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    if args.list_templates:
        return _list_templates()
    from engine.strategies import StrategyConfig, build_prompt
    from engine.templates import get_template

    template = get_template(args.template)
    values = _values(args)
    needed = [v for v in template.variables() if v not in values]
    if "prompt" in needed:
        raise TunedeckError(f"Template '{template.name}' needs an input: pass --input TEXT "
                            "(or --input - to read stdin).")
    chat = {"auto": None, "chat": True, "raw": False}[args.mode]
    strategy = StrategyConfig(kind=args.strategy, k=args.k, selection=args.selection,
                              seed=args.seed, cot_trigger=args.cot_trigger,
                              answer_pattern=args.answer_pattern, samples=args.samples, chat=chat)
    if args.strategy in ("few-shot", "few-shot-cot") and args.k > 0 and args.data is None:
        raise TunedeckError(f"The {args.strategy} strategy takes its examples from a dataset: "
                            "pass --data FILE (or --k 0).")
    examples: list[Any] = []
    if args.data is not None and strategy.uses_examples:
        from engine.data import load_examples

        examples = load_examples(args.data)

    from engine.generation import GenerationParams, Generator

    loaded = _load(getattr(args, "model", None), args.adapter, args.quantize, args.force_base)
    built = build_prompt(template, values, loaded.tokenizer, strategy, examples,
                         max_new_tokens=args.max_new_tokens,
                         context_window=loaded.info.context_window)
    for warning in built.warnings:
        _note(f"warning: {warning}")
    if args.show_prompt:
        _note(f"--- prompt ({built.budget.used} tokens, {built.examples_used} examples) ---")
        _note(built.text)
        _note("--- completion ---")
    temperature = args.temperature
    if temperature is None:
        temperature = 0.7 if args.strategy == "self-consistency" else 0.0
    params = GenerationParams(temperature=temperature, top_p=args.top_p, top_k=args.top_k,
                              max_new_tokens=args.max_new_tokens,
                              repetition_penalty=args.repetition_penalty, seed=args.seed,
                              stop=list(args.stop))
    generator = Generator(loaded.model, loaded.tokenizer)
    if args.strategy == "self-consistency":
        output, metrics = _self_consistency(generator, built, params, strategy)
    else:
        from engine.strategy_run import run_strategy

        run = run_strategy(generator, built, strategy, params,
                           on_text=lambda _index, delta: _stream(delta),
                           on_end=lambda _index, _result: _stream("\n"))
        result = run.results[0]
        output, metrics = result.text, result.metrics()
        if strategy.chain_of_thought:
            answer = run.answer
            metrics["answer"] = answer
            _note(f"answer: {answer if answer is not None else '(none found)'}")
        _note(f"{result.prompt_tokens} prompt tokens, {result.completion_tokens} new · "
              f"first token {result.ttft_s:.2f} s · {result.tokens_per_s:.1f} tokens/s · "
              f"stop: {result.stop_reason}")
    metrics.update(examples_used=built.examples_used, examples_dropped=built.examples_dropped,
                   prefix_len=built.prefix_len, warnings=built.warnings)
    if not args.no_save:
        _save(args, loaded, template, strategy, params, values, built, output, metrics)
    return 0


def _load(model: str | None, adapter: str | None, quantize: str | None = None,
          force_base: bool = False) -> Any:
    from engine.adapter_base import load_with_adapter

    return load_with_adapter(model, adapter, quantize=quantize, force=force_base, note=_note,
                             warn=lambda text: _note(f"warning: {text}"))


def _self_consistency(generator: Any, built: Any, params: Any,
                      strategy: Any) -> tuple[str, dict[str, Any]]:
    from engine.strategy_run import run_strategy

    if params.greedy:
        _note("warning: self-consistency with temperature 0 repeats one answer; "
              "use --temperature 0.7")
    # Sampled as asked: --temperature 0 stays greedy (the warning above says so).
    run = run_strategy(generator, built, strategy, params, greedy_fallback=None,
                       on_start=lambda i: _stream(f"--- sample {i + 1}/{strategy.samples} ---\n"),
                       on_text=lambda _index, delta: _stream(delta),
                       on_end=lambda _index, _result: _stream("\n"))
    vote, results = run.vote, run.results
    agreeing = round(vote.agreement * len(vote.answers))
    shown = vote.answer if vote.answer is not None else "(no answer found)"
    _stream(f"--- vote ---\nAnswer: {shown}\n")
    _note(f"agreement {vote.agreement:.0%} ({agreeing} of {len(vote.answers)} samples); "
          f"answers: {', '.join(a if a is not None else '–' for a in vote.answers)}")
    output = "\n\n".join(f"--- sample {i + 1} ---\n{text}"
                         for i, text in enumerate(vote.completions))
    metrics = {
        "answer": vote.answer, "agreement": vote.agreement, "answers": vote.answers,
        "prompt_tokens": built.budget.used,
        "completion_tokens": run.completion_tokens,
        "ttft_s": results[0].ttft_s if results else 0.0,
        "tokens_per_s": (sum(r.tokens_per_s for r in results) / len(results)) if results else 0.0,
        "total_s": run.total_s,
        "reused_prefix_tokens": sum(r.reused_prefix_tokens for r in results),
    }
    return output, metrics


def _save(args: argparse.Namespace, loaded: Any, template: Any, strategy: Any, params: Any,
          values: dict, built: Any, output: str, metrics: dict) -> None:
    from engine.store import HistoryStore
    from engine.templates import template_to_yaml

    strategy_record = strategy.as_dict()
    if args.data is not None:
        strategy_record["data"] = str(Path(args.data).resolve())
    with HistoryStore() as store:
        from engine.adapters import active_ref

        try_id = store.add_try(model=loaded.info.name, adapter=active_ref(loaded), template=template.name,
                               template_text=template_to_yaml(template), strategy=strategy_record,
                               params=params.as_dict(), inputs=values, prompt_text=built.text,
                               output=output, metrics=metrics)
    _note(f"saved as try #{try_id} (tunedeck history show {try_id})")


# --------------------------------------------------------------------------- history


def _print_json(tries: list) -> int:
    from dataclasses import asdict

    from cli.listing import emit

    return emit([asdict(t) for t in tries], [], fmt="json", title="", empty="")


def run_history(args: argparse.Namespace) -> int:
    from cli.console import console
    from engine.store import HistoryStore

    with HistoryStore() as store:
        if args.action == "export":
            if not args.target:
                raise TunedeckError("history export needs an output file: "
                                    "tunedeck history export tries.jsonl")
            from engine import paths
            from engine.safe_write import check_target

            target = check_target(Path(args.target), force=args.force, inputs=[paths.db_path()],
                                  default_name="tries.jsonl", what="export")
            count = store.export_tries_jsonl(target)
            print(f"{count} tries written to {target}")
            return 0
        if args.action == "show":
            if not args.target or not args.target.isdigit():
                raise TunedeckError("history show needs a try id: tunedeck history show 3")
            t = store.get_try(int(args.target))
            if args.list_format == "json":
                return _print_json([t])
            out = console()
            out.print(f"[bold]try #{t.id}[/] {t.created_at} · {t.model}"
                      f"{' + ' + t.adapter if t.adapter else ''} · template {t.template} · "
                      f"{t.strategy.get('kind', '?')}")
            out.print("[bold]inputs[/]", t.inputs)
            out.print("[bold]prompt[/]", markup=True)
            out.print(t.prompt_text, markup=False)
            out.print("[bold]output[/]", markup=True)
            out.print(t.output, markup=False)
            out.print("[bold]metrics[/]", t.metrics)
            return 0
        tries = store.list_tries(limit=args.limit, search=args.search)
    if args.list_format == "json":
        return _print_json(tries)
    if not tries:
        print("No tries recorded yet. Run one with: tunedeck prompt --input '…'")
        return 0
    out = console()
    # One line per try: reads well on any width (a table squeezes its columns to nothing).
    for t in tries:
        text_in = " ".join(str(v) for v in t.inputs.values()).replace("\n", " ")
        text_out = t.output.replace("\n", " ").strip()
        rate = t.metrics.get("tokens_per_s")
        speed = f" · {rate:.1f} tok/s" if isinstance(rate, (int, float)) else ""
        head = (f"#{t.id} {t.created_at.replace('T', ' ')[:16]} {t.template}/"
                f"{t.strategy.get('kind', '?')}{speed}")
        out.print(head, markup=False, highlight=False)
        out.print(f"    in:  {text_in}", markup=False, overflow="ellipsis", no_wrap=True)
        out.print(f"    out: {text_out}", markup=False, overflow="ellipsis", no_wrap=True)
    return 0

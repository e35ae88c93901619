"""`tunedeck export`: a run's adapter merged into its base model (a Hugging Face folder, or one
GGUF file with an Ollama Modelfile), or the adapter alone.
`tunedeck adapters`: every adapter the runs have produced, with the reference to use it by.
"""

from __future__ import annotations

import argparse

from cli.console import console
from cli.listing import Column, add_format, emit
from engine.errors import TunedeckError
from engine.formatting import human_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="merge a run's adapter into its base model, or export the adapter alone",
        description="Export what a run trained. --merge writes a standard Hugging Face model "
        "folder (the adapter merged into the base it was trained on, de-quantized for QLoRA; "
        "tokenizer, chat template, generation "
        "config); --gguf writes the merged model as one GGUF file for llama.cpp / Ollama "
        "(tokenizer, chat template, stop tokens) with an Ollama Modelfile beside it; --adapter "
        "writes the adapter in PEFT's layout with a model card. A bare name as OUT_DIR is saved under the data home's exports folder, where `tunedeck models` and "
        "the Models screen list merged models.")
    p.add_argument("run", metavar="RUN_ID",
                   help="run id (or a unique part), RUN_ID:checkpoint-N, RUN_ID:latest, or an "
                   "adapter folder")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--merge", metavar="OUT_DIR", default=None,
                        help="write the merged model here")
    target.add_argument("--gguf", metavar="OUT_DIR", default=None,
                        help="write the merged model as GGUF + Modelfile here")
    target.add_argument("--adapter", metavar="OUT_DIR", default=None,
                        help="write the adapter and its model card here")
    p.add_argument("--quant", default=None, metavar="TYPE",
                   help="--gguf: tensor type, one of f16 (default), bf16, f32, q8_0, q5_1, q5_0, "
                   "q4_1, q4_0")
    p.add_argument("--checkpoint", default=None, metavar="N",
                   help="a checkpoint step (or 'latest') instead of the final adapter")
    p.add_argument("--base", default=None, metavar="MODEL",
                   help="--merge / --gguf: the base model, when the run's model has moved")
    p.add_argument("--device", default=None,
                   help="--merge / --gguf: device for merging (default: auto)")
    p.add_argument("--quantize", choices=("none", "4bit", "8bit"), default=None,
                   help="--merge: load the base this way instead of as the adapter was trained "
                   "(a QLoRA adapter merges into its de-quantized 4-bit base; an override warns)")
    p.add_argument("--force-base", action="store_true",
                   help="--merge: use --base even if its weights differ from the adapter's base")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.set_defaults(func=run)

    a = subparsers.add_parser("adapters", help="list the adapters of every run (final and "
                              "checkpoints)")
    add_format(a)
    a.set_defaults(func=run_list)


def run(args: argparse.Namespace) -> int:
    from engine import export

    err = console(stderr=True)
    if args.quant is not None and args.gguf is None:
        raise TunedeckError("--quant applies to --gguf only: tunedeck export RUN_ID --gguf "
                            f"OUT_DIR --quant {args.quant}")
    if args.gguf is not None:
        return run_gguf(args, err)
    if args.merge is not None:
        result = export.export_merged(
            args.run, args.merge, checkpoint=args.checkpoint, base=args.base, device=args.device,
            force=args.force, quantize=args.quantize, force_base=args.force_base,
            progress=lambda text: err.print(f"[dim]{text}[/dim]"),
            warn=lambda text: err.print(f"[yellow]warning:[/] {text}"))
        how = f'AutoModelForCausalLM.from_pretrained("{result.path}")'
        also = f"Use it here with: tunedeck prompt --model {result.path} …"
    else:
        result = export.export_adapter(args.run, args.adapter, checkpoint=args.checkpoint,
                                       force=args.force)
        how = f'PeftModel.from_pretrained(base, "{result.path}")'
        also = f"Use it here with: tunedeck prompt --adapter {result.path} …"
    # The path alone on stdout, so scripts can capture it; the rest is for the person.
    print(result.path)
    err.print(f"Exported {result.adapter.label} ({result.kind}, base {result.base_model}, "
              f"{human_bytes(result.size_bytes)}): {', '.join(result.files)}")
    err.print(f"Load it with {how}. {also}")
    return 0


def run_gguf(args: argparse.Namespace, err) -> int:
    from engine import gguf_export

    result = gguf_export.export_gguf(
        args.run, args.gguf, quant=args.quant or gguf_export.DEFAULT_QUANT,
        checkpoint=args.checkpoint, base=args.base, device=args.device, force=args.force,
        progress=lambda text: err.print(f"[dim]{text}[/dim]", highlight=False),
        warn=lambda text: err.print(f"[yellow]warning:[/] {text}"))
    print(result.gguf)  # the file alone on stdout, for scripts
    err.print(f"Exported {result.gguf.name} ({result.architecture}, {result.quant}, "
              f"{human_bytes(result.size_bytes)}, base {result.base_model}) and "
              f"{result.modelfile.name}; stops on {', '.join(result.stops)}.", highlight=False)
    if result.fallbacks:
        err.print(f"Kept in f16 (rows do not split into {result.quant} blocks): "
                  f"{', '.join(result.fallbacks)}", highlight=False)
    commands = result.run_commands()
    if commands:
        for command in commands:
            err.print(f"Run it with: {command}", highlight=False, soft_wrap=True)
    else:
        err.print(f"Run it with llama.cpp (llama-cli -m {result.gguf} -cnv) or Ollama (ollama "
                  f"create NAME -f {result.modelfile}); neither is on PATH here.",
                  highlight=False, soft_wrap=True)
    return 0


ADAPTER_COLUMNS = [
    Column("reference", "ref", key_column=True),
    Column("kind", "kind_label"),
    Column("method", "method", drop=2),
    Column("base model", "base_model", shrink=True, drop=3),
    Column("run state", "state", drop=1),
]


def run_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from engine import adapters, paths

    found = adapters.list_available()
    if not found and args.list_format == "table":
        print(f"No adapters yet under {paths.runs_dir()}. Train one with `tunedeck train`.")
        return 1
    records = []
    for info in found:
        record = {k: v for k, v in asdict(info).items() if not k.startswith("_")}
        record["kind_label"] = ("final" if info.kind == "final"
                                else f"checkpoint (step {info.step})")
        records.append(record)
    if args.list_format == "json":
        for record in records:
            record.pop("kind_label")
    return emit(records, ADAPTER_COLUMNS, fmt=args.list_format, title="Adapters", empty="",
                footer="Use one with: tunedeck prompt --adapter REFERENCE …, or tunedeck export "
                "REFERENCE --merge NAME (or --gguf NAME)")

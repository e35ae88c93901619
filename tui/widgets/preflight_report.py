"""The Train screen's pre-flight report as styled text: the verdict, the problems, the sizes and
one example's tokens with their trained / masked labels."""

from __future__ import annotations

from typing import Any

from textual.content import Content

from engine.formatting import duration


def report_content(report: Any) -> Content:
    """The pre-flight report as styled text: verdict, problems, sizes, then the token view."""
    parts: list[Any] = []
    if report.ok:
        parts.append(("Pre-flight OK", "bold $success"))
    else:
        parts.append((f"Pre-flight: {len(report.errors)} problem(s), not launchable",
                      "bold $error"))
    parts.append("\n")
    for error in report.errors:
        parts += [("✗ ", "bold $error"), (error, "$error"), "\n"]
    for warning in report.warnings:
        parts += [("! ", "bold $warning"), (warning, "$warning"), "\n"]
    pct = 100 * report.trainable_params / report.total_params if report.total_params else 0.0
    eta = f"~{duration(report.est_seconds)}" if report.est_seconds is not None else "unknown"
    rows = f"{report.train_rows:,} train · {report.eval_rows:,} eval"
    if getattr(report, "mean_tokens", 0):
        rows += f" · {report.mean_tokens:,.0f} tokens/row"
    if getattr(report, "padding_ratio", 0):
        rows += f" · {100 * report.padding_ratio:.0f}% padding"
    if getattr(report, "shared_ratio", 0):
        rows += f" · {100 * report.shared_ratio:.0f}% in a shared prefix"
    facts = [
        ("rows", rows),
        ("steps", f"{report.steps:,} (time {eta}"
                  + (f" on {report.device})" if getattr(report, "device", "") else ")")),
    ]
    between = getattr(report, "between", None)
    if between is not None and between.describe(duration):
        # Evaluation and samples run between the steps and can take longer than they do.
        train_part = (f"steps ~{duration(report.train_seconds)} · "
                      if getattr(report, "train_seconds", None) is not None else "")
        facts.append(("of which", train_part + between.describe(duration)))
    facts += [("fitted", line) for line in getattr(report, "fitted", [])]
    if getattr(report, "batch_detail", ""):  # processes, and the global batch they make
        launch = f" ({report.launch})" if getattr(report, "launch", "") else ""
        facts.append(("processes", f"{report.world_size}{launch}; {report.batch_detail}"))
    if getattr(report, "optimizer", ""):
        facts.append(("optimizer", f"{report.optimizer}; gradient checkpointing "
                                   f"{'on' if report.checkpointing else 'off'} "
                                   f"({report.checkpointing_reason})"))
    facts += [
        ("trainable", f"{report.trainable_params:,} of {report.total_params:,} ({pct:.2f}%)"),
    ]
    if getattr(report, "precision", ""):
        from engine.training.preflight_checks import describe_precision

        facts.append(("precision", f"{describe_precision(report.precision)}: "
                                   f"{report.precision_reason}"))
    memory = report.memory_estimate_mb or {}
    if memory:
        order = [k for k in ("weights", "optimizer", "activations", "total") if k in memory]
        order += [k for k in memory if k not in order]
        facts.append(("memory", " · ".join(f"{k} {memory[k]:,.0f} MB" for k in order)))
    for key, value in facts:
        parts += [(f"{key:<10}", "$text-muted"), value, "\n"]
    if report.example_tokens:
        parts += ["\n", ("One example ", "bold"), ("trained", "bold $success on $success 20%"),
                  " / ", ("masked", "$text-muted"), "\n"]
        for token, trained in report.example_tokens:
            text = token.replace("\n", "⏎\n")
            parts.append((text, "$success on $success 20%") if trained else (text, "$text-muted"))
    return Content.assemble(*parts)

"""The Playground's runs, as a mixin of the screen: Ctrl+R reads the form, a thread worker builds
each strategy's prompt (`PromptsBuilt`: a slow template never holds the screen), the jobs become
one per pane (a strategy, or the base and the adapter), and another worker runs them through
`engine.strategy_run.run_strategy` and records each in the history; Esc cancels.

Messages up: `CompletionUpdate` (coalesced) while a pane streams, `JobDone` when its run is
recorded, `GenerationFinished` when the worker ends (done, cancelled or failed: a failure is
also shown by the screen's one error path).

The host screen provides the form (``current_template()``, ``strategy()``, ``params()``,
``compare_kinds()``, ``_inputs``), ``_ensure_panes(n)``, ``_rate_try``, ``_rate_nothing``,
``_set_status``, ``refresh_prompt``, ``save_settings`` and, from `AdapterControls`,
``adapter_jobs``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from textual import work
from textual.message import Message
from textual.screen import Screen

from engine.errors import TunedeckError
from tui.messages import GenerationFinished
from tui.screens.base import describe_error
from tui.widgets.completion_view import CompletionUpdate, CompletionView, metrics_line

MAX_PANES = 4


@dataclass
class RunJob:
    """One strategy's prompt, built in the build worker, ready for the generate worker."""

    slot: int
    label: str
    strategy: Any  # engine.strategies.StrategyConfig
    built: Any  # engine.strategies.BuiltPrompt (None when it could not be built)
    error: str = ""
    generator: Any = None  # base vs adapter: this job's own engine.adapters.AdapterGenerator


@dataclass
class JobDone(Message):
    slot: int
    metrics: str
    answer: str | None = None
    failed: bool = False
    try_id: int | None = None  # the history row of this run (None: it could not be recorded)


@dataclass
class PromptsBuilt(Message):
    """The build worker's jobs, ready to run (or why none can: `error`)."""

    jobs: list[RunJob]
    context: dict
    error: str = ""


class PlaygroundRun(Screen):
    _generating = False
    _compare = False
    _cancel: threading.Event | None = None
    _store: Any = None
    _generator: Any = None
    _generator_for: Any = None

    def _get_generator(self, loaded: Any) -> Any:
        from engine.generation import Generator

        if self._generator is None or self._generator_for is not loaded:
            self._generator = Generator(loaded.model, loaded.tokenizer)
            self._generator_for = loaded
        return self._generator

    def action_run(self) -> None:
        """Reads the form now; the prompts are built (templates rendered, under the sandbox's
        time limit) in a worker, so a slow template never holds the screen (`PromptsBuilt`)."""
        if self._generating:
            self.notify("Already generating: Esc cancels.", severity="warning")
            return
        loaded = self._loaded()
        if loaded is None:
            self.notify("The model is not ready yet.", severity="warning")
            return
        try:
            template = self.current_template()
            # The template's own variables, as refresh_prompt reads them: the prompt shown is
            # then the one that runs, even before a pending refresh has added a new variable.
            values = self._inputs.values_for(template.variables())
            params = self.params()
            kinds = self.compare_kinds() if self._compare else [self.strategy().kind]
            if self._compare and not 2 <= len(kinds) <= MAX_PANES:
                raise TunedeckError(f"Compare runs 2–{MAX_PANES} strategies; {len(kinds)} are "
                                    "ticked on the Strategy tab.")
            strategies = [self.strategy(kind) for kind in kinds]
            builders = [self._builder(template, values, strat, loaded) for strat in strategies]
            context = {
                "template": template, "values": values, "params": params,
                "model": getattr(loaded.info, "name", "model"), "loaded": loaded,
                "shown": self.strategy(),  # the strategy the Prompt tab and the meter show
            }
        except TunedeckError as err:
            self._cannot_run(str(err))
            return
        self._generating = True  # a second Ctrl+R waits for this one
        self.refresh_bindings()
        self._set_status("Building the prompt…")
        self._build_worker(list(zip(kinds, strategies, builders, strict=True)), context)

    def _cannot_run(self, error: str) -> None:
        self._set_status(error, error=True)
        self.notify(error, title="Cannot run", severity="error")

    @work(thread=True, exclusive=True, exit_on_error=False, group="build",
          description="Building the prompt")
    def _build_worker(self, builders: list[tuple[str, Any, Any]], context: dict) -> None:
        jobs = []
        try:
            for slot, (kind, strat, build) in enumerate(builders):
                try:
                    jobs.append(RunJob(slot, kind, strat, build()))
                except TunedeckError as err:
                    jobs.append(RunJob(slot, kind, strat, None, error=str(err)))
        except Exception as err:
            self.post_message(PromptsBuilt([], context, describe_error(err)))
            raise  # the screen's error path tells the user
        self.post_message(PromptsBuilt(jobs, context))

    def on_prompts_built(self, message: PromptsBuilt) -> None:
        self._generating = False
        self.refresh_bindings()
        context, jobs = message.context, message.jobs
        if message.error:
            self._set_status(message.error, error=True)
            return
        loaded = context.pop("loaded")
        shown = context.pop("shown")
        try:
            # One strategy that cannot be built (few-shot without a dataset) does not keep the
            # others of a compare from running: its pane says why.
            failed = [job.error for job in jobs if job.error]
            if failed and (not self._compare or len(failed) == len(jobs)):
                raise TunedeckError(failed[0])
            jobs = self.adapter_jobs(jobs, loaded)
        except TunedeckError as err:
            self._cannot_run(str(err))
            return
        if self._refresh_timer is not None:  # typed just before Ctrl+R: shown below already
            self._refresh_timer.stop()
        self.refresh_prompt(next((job.built for job in jobs
                                  if job.built is not None and job.strategy == shown), None))
        panes = self._ensure_panes(len(jobs))
        self._rate_nothing("generating…")  # the previous output is being replaced
        for job, pane in zip(jobs, panes, strict=True):
            pane.start(self._pane_title(job))
            if job.error:
                pane.set_text(job.error)
                pane.finish("not run", failed=True)
        self._cancel = threading.Event()
        self._generating = True
        self.refresh_bindings()
        self.save_settings()
        self._set_status("Generating… Esc cancels.")
        generator, adapter = self._adapter_generator(loaded)
        context["adapter"] = adapter
        self._generate_worker(generator, jobs, context, self._cancel)

    def _adapter_generator(self, loaded: Any) -> tuple[Any, str | None]:
        """The generator bound to the adapter active on the model (if any), and its reference."""
        from engine import adapters

        generator = self._get_generator(loaded)
        extras = getattr(loaded, "extras", None) or {}
        if extras.get(adapters.EXTRAS_KEY) is None:
            return generator, None
        return adapters.AdapterSet.of(loaded).bind(generator), adapters.active_ref(loaded)

    def _pane_title(self, job: RunJob) -> str:
        if job.generator is not None:
            # Base vs adapter: which model first, so a narrow pane still tells the two apart.
            return f"{job.generator.label} · {job.strategy.kind}"
        if not self._compare:
            return f"output · {job.label}"
        return job.label

    def action_cancel(self) -> None:
        if self._generating and self._cancel is not None:
            self._cancel.set()
            self._set_status("Cancelling…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            # Shown (dimmed) while idle so the footer always lists it.
            return True if self._generating else None
        return True

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate",
          description="Generating")
    def _generate_worker(self, generator: Any, jobs: list[RunJob], context: dict,
                         cancel: threading.Event) -> None:
        try:
            for job in jobs:
                if job.error:
                    continue
                if cancel.is_set():
                    self.post_message(JobDone(job.slot, "cancelled before it started"))
                    continue
                self._run_job(job, job.generator or generator, context, cancel)
        except Exception as err:
            self.post_message(GenerationFinished("failed", describe_error(err)))
            raise  # the screen's error path tells the user
        self.post_message(GenerationFinished("cancelled" if cancel.is_set() else "done"))

    def _run_job(self, job: RunJob, generator: Any, context: dict,
                 cancel: threading.Event) -> None:
        """One strategy, streamed into its pane (in the worker's thread)."""
        from engine.strategy_run import run_strategy

        texts: list[str] = []
        shown: list[str] = []
        prefix = [""]
        sampled = job.strategy.kind == "self-consistency" and job.strategy.samples > 1

        def on_start(index: int) -> None:
            shown.clear()
            if sampled:
                prefix[0] = "".join(f"── sample {i + 1} ──\n{t}\n" for i, t in
                                    enumerate(texts)) + f"── sample {index + 1} ──\n"

        def on_text(_index: int, delta: str) -> None:
            shown.append(delta)
            self.post_message(CompletionUpdate(job.slot, prefix[0] + "".join(shown)))

        run = run_strategy(generator, job.built, job.strategy, context["params"],
                           on_text=on_text, on_start=on_start,
                           on_end=lambda _index, result: texts.append(result.text),
                           cancel=cancel)
        answer = None
        if sampled:
            agreement = run.vote.agreement if run.vote is not None else 0.0
            answer = (f"answer: {run.answer or '—'} · agreement {agreement:.0%} of "
                      f"{len(run.answers)}")
        elif run.answers:
            answer = f"answer: {run.answer or '—'}"
        metrics = metrics_line(run.results[-1])
        if sampled:
            metrics = (f"{len(run.results)} samples · {run.completion_tokens:,} tokens · "
                       f"last: {metrics}")
        try_id = None
        try:
            try_id = self._record(job, context, run.texts, run.results, answer)
        except Exception as err:  # the run is still shown; only its record is missing
            self.app.call_from_thread(self.notify, describe_error(err),
                                      title="Not recorded in the history", severity="warning")
        self.post_message(JobDone(job.slot, metrics, answer, try_id=try_id))

    def _record(self, job: RunJob, context: dict, texts: list[str], results: list[Any],
                answer: str | None) -> int:
        """Write the run to the history; returns its try id."""
        from engine.store import HistoryStore

        if self._store is None:
            self._store = HistoryStore()
        last = results[-1]
        metrics = last.metrics()
        if len(results) > 1:
            metrics.update(samples=len(results),
                           completion_tokens=sum(r.completion_tokens for r in results),
                           total_s=sum(r.total_s for r in results))
        if answer:
            metrics["answer"] = answer
        output = texts[0] if len(texts) == 1 else "\n\n".join(
            f"── sample {i + 1} ──\n{t}" for i, t in enumerate(texts))
        template = context["template"]
        return self._store.add_try(
            model=context["model"], template=template.name,
            adapter=job.generator.adapter_ref if job.generator else context["adapter"],
            template_text=template.template, strategy=job.strategy.as_dict(),
            params=context["params"].as_dict(),
            inputs={**context["values"], "system": template.system} if template.system
            else dict(context["values"]),
            prompt_text=job.built.text, output=output, metrics=metrics)

    def on_completion_update(self, message: CompletionUpdate) -> None:
        panes = list(self.query(CompletionView))
        if message.slot < len(panes):
            panes[message.slot].set_text(message.text)

    def on_job_done(self, message: JobDone) -> None:
        panes = list(self.query(CompletionView))
        if message.slot < len(panes):
            panes[message.slot].finish(message.metrics, failed=message.failed)
            panes[message.slot].set_answer(message.answer)
        # Only a single output is rated here: in compare mode the bar could not say which
        # pane it means (the Rate screen's queue holds every pane's try).
        if len(panes) == 1 and message.try_id is not None:
            self._rate_try(message.try_id)

    def on_generation_finished(self, message: GenerationFinished) -> None:
        self._generating = False
        self.refresh_bindings()
        failed = message.outcome == "failed"
        if failed:
            self._set_status(message.error, error=True)
        else:
            self._set_status("Cancelled." if message.outcome == "cancelled"
                             else "Done. Ctrl+O shows the history.")
        for pane in self.query(CompletionView).filter(".running"):
            pane.finish("failed" if failed else "cancelled", failed=failed)


def stored_metrics(metrics: dict[str, Any]) -> str:
    """A recorded try's metrics as the one line under its pane."""
    parts = []
    if "ttft_s" in metrics:
        parts.append(f"TTFT {metrics['ttft_s']:.2f} s")
    if "tokens_per_s" in metrics:
        parts.append(f"{metrics['tokens_per_s']:.1f} tok/s")
    if "prompt_tokens" in metrics:
        parts.append(f"{metrics['prompt_tokens']:,} → {metrics.get('completion_tokens', 0):,} "
                     "tokens")
    if "stop_reason" in metrics:
        parts.append(str(metrics["stop_reason"]))
    return " · ".join(parts) or "recorded"

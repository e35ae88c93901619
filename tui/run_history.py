"""Everything one run has reported so far, read from its run directory: the events, the status,
and what follows from them (step, ETA, the evaluation or sampling in progress). No widgets: the
run view, the Runs screen and the progress line all read it.
"""

from __future__ import annotations

from typing import Any

from engine.adapters import read_run_config
from engine.formatting import duration
from engine.training.rundir import ACTIVE_STATES, EventCursor, RunDir
from tui.widgets.loss_chart import Series


class RunHistory:
    """Everything one run has reported so far, kept up to date by `poll()`."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.cursor = EventCursor()
        self.logs: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}
        self.state = "unknown"
        self._config: dict[str, Any] | None = None

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """Read what the run appended since the last call: (new events, status changed)."""
        new = self.run.read_events(self.cursor)
        for event in new:
            kind = event.get("type")
            if kind == "log":
                _append_by_step(self.logs, event)
            elif kind == "eval":
                _append_by_step(self.evals, event)
            elif kind == "sample":
                self.samples.append(event)
            elif kind == "state":
                self.states.append(event)
        status = self.run.read_status()
        state = self.run.state(status)
        changed = status != self.status or state != self.state
        self.status, self.state = status, state
        return new, changed

    # ------------------------------------------------------------------ derived
    @property
    def step(self) -> int:
        logged = _number(self.logs[-1].get("step")) if self.logs else None
        return int(max(logged or 0, _number(self.status.get("step")) or 0))

    @property
    def total_steps(self) -> int | None:
        total = _number(self.status.get("total_steps"))
        return int(total) if total else None

    @property
    def epoch(self) -> float | None:
        return _number(self.logs[-1].get("epoch")) if self.logs else None

    def _last(self, key: str) -> float | None:
        """The newest logged number under `key`."""
        for event in reversed(self.logs):
            if _number(event.get(key)) is not None:
                return _number(event.get(key))
        return None

    @property
    def last_loss(self) -> float | None:
        return self._last("loss")

    @property
    def last_reward(self) -> float | None:
        """A GRPO run's last mean reward (None for other runs)."""
        return self._last("reward")

    @property
    def last_eval_loss(self) -> float | None:
        return _number(self.evals[-1].get("eval_loss")) if self.evals else None

    @property
    def tokens_per_s(self) -> float | None:
        return _number(self.logs[-1].get("tokens_per_s")) if self.logs else None

    @property
    def mem_mb(self) -> float | None:
        return _number(self.logs[-1].get("mem_mb")) if self.logs else None

    @property
    def error(self) -> str:
        if self.state != "failed":
            return ""
        for event in reversed(self.states):
            if event.get("error"):
                return str(event["error"])
        return str(self.status.get("error")
                   or "the runner ended without saying why: see train.log")

    @property
    def eta_seconds(self) -> float | None:
        """From the pace of the current session of the runner (a resume restarts the clock):
        the training steps' own pace, plus the evaluations still to come at their measured cost
        (an evaluation of a large set can take longer than all the steps together)."""
        total = self.total_steps
        if not total or len(self.logs) < 2:
            return None
        since = max((_number(e.get("t")) or 0 for e in self.states
                     if e.get("state") == "running"), default=0)
        recent = [e for e in self.logs if (_number(e.get("t")) or 0) >= since] or self.logs
        if len(recent) < 2:
            recent = self.logs[-2:]
        first, last = recent[0], recent[-1]
        first_step, last_step = _number(first.get("step")) or 0, _number(last.get("step")) or 0
        steps = last_step - first_step
        seconds = (_number(last.get("t")) or 0) - (_number(first.get("t")) or 0)
        # Evaluations between those logs are counted apart, at what they cost.
        seconds -= sum(_number(e.get("seconds")) or 0 for e in self.evals
                       if first_step <= (_number(e.get("step")) or 0) < last_step)
        if steps <= 0 or seconds <= 0:
            return None
        eta = seconds / steps * max(total - last_step, 0)
        eval_every = int(_number(self.config.get("eval_every")) or 0)
        cost = self.eval_cost
        if eval_every and cost:
            # Evaluations still to come: at each multiple of eval_every after the last log.
            eta += cost * (total // eval_every - int(last_step) // eval_every)
        return eta

    @property
    def eval_cost(self) -> float | None:
        """Seconds the last whole evaluation took (events, or status for older runners)."""
        for event in reversed(self.evals):
            if _number(event.get("seconds")):
                return _number(event["seconds"])
        return _number(self.status.get("eval_seconds"))

    @property
    def phase(self) -> dict[str, Any]:
        """The evaluation or sampling the runner is in, from its status; {} between steps."""
        if self.state not in ACTIVE_STATES or not self.status.get("phase"):
            return {}
        return {k: self.status.get(k) for k in ("phase", "phase_done", "phase_total",
                                                 "phase_started", "updated")}

    @property
    def phase_text(self) -> str:
        """`evaluating 24/72 · ETA 1m10s` while the runner evaluates (or samples); "" else."""
        phase = self.phase
        if not phase:
            return ""
        done, total = int(phase.get("phase_done") or 0), int(phase.get("phase_total") or 0)
        unit = " rows" if phase["phase"] == "evaluating" else ""
        text = f"{phase['phase']} {done}/{total}{unit}" if total else str(phase["phase"])
        eta = None
        started, updated = _number(phase.get("phase_started")), _number(phase.get("updated"))
        if done and total and started and updated and updated > started:
            # The runner's own clock (its status timestamps), as for the training ETA.
            eta = (updated - started) / done * (total - done)
        elif phase["phase"] == "evaluating" and total:
            cost, rows = self.eval_cost, _number(self.status.get("eval_rows"))
            if cost:
                eta = cost * total / rows if rows else cost
        return f"{text} · ETA {duration(eta)}"

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = read_run_config(self.run)
        return self._config

    @property
    def model(self) -> str:
        return str(self.status.get("model") or self.config.get("model") or "?")

    @property
    def method(self) -> str:
        return str(self.status.get("method") or self.config.get("method") or "?")

    @property
    def started(self) -> float | None:
        started = _number(self.status.get("started"))
        if started is None and (self.states or self.logs):
            started = _number((self.states or self.logs)[0].get("t"))
        return started

    def series(self, label: str = "") -> Series:
        with_loss = [e for e in self.logs if _number(e.get("loss")) is not None]
        with_lr = [e for e in self.logs if _number(e.get("lr")) is not None]
        return Series(
            label=label or self.run.id,
            steps=[e.get("step") for e in with_loss], losses=[e["loss"] for e in with_loss],
            eval_steps=[e.get("step") for e in self.evals],
            eval_losses=[e.get("eval_loss") for e in self.evals],
            lr_steps=[e.get("step") for e in with_lr], lrs=[e["lr"] for e in with_lr],
            rewards=self.reward_series(),
        )

    def reward_series(self) -> dict[str, tuple[list[float], list[float]]] | None:
        """GRPO's rewards per step (`reward`, then `rewards/<name>/mean`), None for other runs."""
        # In the order the run logs them: the config's order of its rewards.
        keys = ["reward", *dict.fromkeys(k for e in self.logs for k in e
                                         if k.startswith("rewards/") and k.endswith("/mean"))]
        out = {}
        for key in keys:
            points = [(e.get("step"), e[key]) for e in self.logs if _number(e.get(key)) is not None]
            if points:
                name = key if key == "reward" else key[len("rewards/"):-len("/mean")]
                out[name] = ([p[0] for p in points], [p[1] for p in points])
        return out if "reward" in out else None


def _append_by_step(events: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """A step logged again (a resume from an older checkpoint after kill -9) replaces the old
    points from that step on, so the curve never folds back on itself."""
    step = event.get("step")
    if isinstance(step, (int, float)):
        while events and isinstance(events[-1].get("step"), (int, float)) \
                and events[-1]["step"] >= step:
            events.pop()
    events.append(event)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

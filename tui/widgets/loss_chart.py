"""The loss chart: train and eval loss (optionally smoothed) and the learning rate, for one run or
the loss curves of several runs overlaid.

The curves the chart draws are kept in `curves`, so what is on screen can be checked without
reading terminal cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from textual.reactive import reactive
from textual_plotext import PlotextPlot

SMOOTHING = 0.6  # EMA weight, as TensorBoard's slider: 0 = raw, towards 1 = smoother
# plotext takes ~0.35 s to draw 10k points (in the UI thread); a terminal chart is at most a few
# hundred braille dots wide, so longer curves are thinned to this many points.
MAX_POINTS = 400
# Each curve has its own mark, so train / eval / lr (and overlaid runs) are told apart without
# colour (a monochrome terminal, a colour-blind reader): a braille line, dots, a dotted line.
TRAIN_MARK, EVAL_MARK, LR_MARK = "braille", "•", "·"
OVERLAY_MARKS = ("braille", "•", "x", "+", "o", "*")
REWARD_MARKS = ("braille", "•", "x", "+", "o", "*")  # the total, then each reward function
SHOWN = {"braille": "⣀"}  # how the legend writes a plotext marker name


def ema(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average: the first points are not pulled towards zero."""
    out: list[float] = []
    last = 0.0
    for i, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**i) if weight else value)
    return out


def thin(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    """Evenly spaced points of a long curve, always keeping the first and the last."""
    n = len(xs)
    if n <= limit:
        return xs, ys
    picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [xs[i] for i in picks], [ys[i] for i in picks]


@dataclass
class Curve:
    label: str
    xs: list[float]
    ys: list[float]
    right: bool = False  # drawn against the right-hand axis (learning rate)
    scatter: bool = False
    marker: str = TRAIN_MARK

    @property
    def key(self) -> str:
        """The curve in the legend: its mark, then its name."""
        side = " (right axis)" if self.right else ""
        return f"{SHOWN.get(self.marker, self.marker)} {self.label}{side}"


@dataclass
class Series:
    """The points of one run the chart can draw."""

    label: str = ""
    steps: list[float] | None = None
    losses: list[float] | None = None
    eval_steps: list[float] | None = None
    eval_losses: list[float] | None = None
    lr_steps: list[float] | None = None
    lrs: list[float] | None = None
    # GRPO: {"reward": (steps, values), "sql_exec": …}, the mean reward of each step's sampled
    # completions in all and per reward function; drawn instead of the loss, which in GRPO
    # says little (it is ~0 whenever the advantages are centred).
    rewards: dict[str, tuple[list[float], list[float]]] | None = None


def _finite(xs: Sequence[float] | None, ys: Sequence[float] | None) -> tuple[list, list]:
    pairs = [(x, y) for x, y in zip(xs or [], ys or [], strict=True)
             if _is_number(x) and _is_number(y) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class LossChart(PlotextPlot):
    """`show_run` draws one run (train, eval, LR); `show_overlay` draws several runs' train loss."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 6; }
    """

    smooth: reactive[bool] = reactive(True)
    show_lr: reactive[bool] = reactive(True)

    def __init__(self, *, title: str = "", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._title = title
        self._series: list[Series] = []
        self._overlay = False
        self.curves: list[Curve] = []

    # ------------------------------------------------------------------ data in
    def show_run(self, series: Series) -> None:
        self._series = [series]
        self._overlay = False
        self.replot()

    def show_overlay(self, series: list[Series]) -> None:
        self._series = list(series)
        self._overlay = True
        self.replot()

    def watch_smooth(self) -> None:
        self.replot()

    def watch_show_lr(self) -> None:
        self.replot()

    # ------------------------------------------------------------------ drawing
    def build_curves(self) -> list[Curve]:
        curves: list[Curve] = []
        for index, series in enumerate(self._series):
            if series.rewards and not self._overlay:
                curves += self._reward_curves(series)
                continue
            xs, ys = _finite(series.steps, series.losses)
            smoothed = self.smooth and len(ys) > 1
            if self._overlay:
                label = series.label or "train"
            else:
                label = "train (smoothed)" if smoothed else "train"
            if xs:
                mark = OVERLAY_MARKS[index % len(OVERLAY_MARKS)] if self._overlay else TRAIN_MARK
                curves.append(Curve(label, xs, ema(ys) if smoothed else ys, marker=mark))
            if self._overlay:
                continue
            ex, ey = _finite(series.eval_steps, series.eval_losses)
            if ex:
                curves.append(Curve("eval", ex, ey, scatter=len(ex) == 1, marker=EVAL_MARK))
            lx, ly = _finite(series.lr_steps, series.lrs)
            if self.show_lr and lx:
                curves.append(Curve("lr", lx, ly, right=True, marker=LR_MARK))
        return curves

    def _reward_curves(self, series: Series) -> list[Curve]:
        curves = []
        for index, (name, (steps, values)) in enumerate((series.rewards or {}).items()):
            xs, ys = _finite(steps, values)
            if xs:
                smoothed = self.smooth and len(ys) > 1 and index == 0
                label = f"{name} (smoothed)" if smoothed else name
                curves.append(Curve(label, xs, ema(ys) if smoothed else ys,
                                    marker=REWARD_MARKS[index % len(REWARD_MARKS)]))
        lx, ly = _finite(series.lr_steps, series.lrs)
        if self.show_lr and lx:
            curves.append(Curve("lr", lx, ly, right=True, marker=LR_MARK))
        return curves

    @property
    def legend(self) -> str:
        return "   ".join(curve.key for curve in self.curves)

    def replot(self) -> None:
        self.curves = [Curve(c.label, *thin(c.xs, c.ys), right=c.right, scatter=c.scatter,
                             marker=c.marker) for c in self.build_curves()]
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        # No axis labels: rows are scarce at 80×24. The legend is the title line above the
        # plot, not plotext's box inside it, which hid the curves it named.
        plt.title("  ".join(filter(None, [self._title, self.legend])) or "no loss points yet")
        for curve in self.curves:
            side = "right" if curve.right else "left"
            draw = plt.scatter if curve.scatter or len(curve.xs) == 1 else plt.plot
            draw(curve.xs, curve.ys, yside=side, marker=curve.marker)
        self.refresh()

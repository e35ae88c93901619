"""The loss chart: smoothing, which curves it draws for one run and for an overlay, and that it
renders in a real App."""

from __future__ import annotations

import math

from textual.app import App, ComposeResult

from tui.widgets.loss_chart import MAX_POINTS, LossChart, Series, ema, thin


def test_ema_is_debiased_and_smooths():
    values = [4.0, 1.0, 4.0, 1.0, 4.0, 1.0, 4.0, 1.0]
    smoothed = ema(values, 0.6)
    assert smoothed[0] == 4.0  # not pulled towards 0 at the start
    assert len(smoothed) == len(values)
    spread = max(smoothed[2:]) - min(smoothed[2:])
    assert spread < 0.6 * (max(values) - min(values))
    assert ema(values, 0.0) == values
    assert ema([], 0.6) == []


def test_ema_follows_a_falling_loss():
    values = [3.0 * math.exp(-i / 10) for i in range(50)]
    smoothed = ema(values)
    assert smoothed[-1] < smoothed[0]
    assert all(b <= a + 1e-9 for a, b in zip(smoothed, smoothed[1:], strict=False))


def test_thin_keeps_ends_and_short_curves():
    xs = list(range(5000))
    tx, ty = thin(xs, [x * 2 for x in xs])
    assert len(tx) == MAX_POINTS and tx[0] == 0 and tx[-1] == 4999
    assert ty == [x * 2 for x in tx] and tx == sorted(tx)
    assert thin([1, 2], [3, 4]) == ([1, 2], [3, 4])


class ChartApp(App):
    def compose(self) -> ComposeResult:
        yield LossChart(id="chart")


def _series(label: str = "run", n: int = 20, offset: float = 0.0) -> Series:
    steps = list(range(1, n + 1))
    return Series(
        label=label, steps=steps, losses=[2.0 - i * 0.05 + offset for i in range(n)],
        eval_steps=[10, 20], eval_losses=[1.7, 1.2],
        lr_steps=steps, lrs=[2e-4 * min(1, s / 4) for s in steps],
    )


async def test_one_run_draws_train_eval_and_lr_with_toggles():
    app = ChartApp()
    async with app.run_test(size=(80, 20)) as pilot:
        chart = app.query_one(LossChart)
        chart.show_run(_series())
        await pilot.pause()
        labels = [c.label for c in chart.curves]
        assert labels == ["train (smoothed)", "eval", "lr"]
        lr = chart.curves[2]
        assert lr.right and lr.ys[-1] == 2e-4
        assert chart.curves[0].ys != _series().losses  # smoothed, not the raw points

        chart.smooth = False
        await pilot.pause()
        assert chart.curves[0].label == "train"
        assert chart.curves[0].ys == _series().losses

        chart.show_lr = False
        await pilot.pause()
        assert [c.label for c in chart.curves] == ["train", "eval"]

        text = chart.plt.build()
        assert "train" in text and "eval" in text


async def test_overlay_draws_one_train_curve_per_run_and_skips_bad_points():
    app = ChartApp()
    async with app.run_test(size=(80, 20)) as pilot:
        chart = app.query_one(LossChart)
        broken = _series("b", n=5)
        broken.losses[2] = float("nan")
        chart.show_overlay([_series("a"), broken])
        await pilot.pause()
        assert [c.label for c in chart.curves] == ["a", "b"]
        assert len(chart.curves[1].xs) == 4 and 3 not in chart.curves[1].xs

        chart.show_run(_series(n=3000))  # a long run is thinned, its last step kept
        await pilot.pause()
        assert len(chart.curves[0].xs) == MAX_POINTS and chart.curves[0].xs[-1] == 3000


async def test_empty_chart_renders():
    app = ChartApp()
    async with app.run_test(size=(60, 12)) as pilot:
        chart = app.query_one(LossChart)
        chart.show_run(Series())
        await pilot.pause()
        assert chart.curves == []
        assert "no loss points yet" in chart.plt.build()

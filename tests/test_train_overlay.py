"""The Train step's overlay of a second run's loss (o), and a preference run's reward figures on the
dashboard, on run folders written by hand."""

from __future__ import annotations

import shutil

import pytest
from test_runs_compare import OTHER_ID, make_other_run, make_preference_run
from test_train_screen import RUN_ID, make_app, make_run, shown, text, until


async def chart_has(pilot, chart, legend, what):
    await until(pilot, lambda: chart.up_to_date and chart.legend == legend, what)


async def test_o_overlays_another_runs_loss_and_takes_it_away(workspace):
    make_run(workspace)
    make_other_run(workspace)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        chart = app.screen.query_one("#train-chart")
        await chart_has(pilot, chart, ("train",), "the run's own loss")
        await pilot.press("o")
        picker = app.screen
        assert type(picker).__name__ == "OverlayModal"
        runs = picker.query_one("#train-overlay-runs")
        assert [runs.get_option_at_index(i).id for i in range(runs.option_count)] == [OTHER_ID]  # not itself
        await pilot.press("enter")
        await chart_has(pilot, chart, (RUN_ID, OTHER_ID), "both runs in the legend")
        name, points = chart.overlay
        assert name == OTHER_ID and len(points) == 21 and points[-1][1] > chart.points[0][-1][1]
        assert f"overlaid: {OTHER_ID}'s loss" in text(app, "#train-message")
        # The same key takes it away.
        await pilot.press("o")
        await chart_has(pilot, chart, ("train",), "the overlay gone")
        assert chart.overlay is None and app.screen.query_one("#train-dashboard").overlay_id is None
        # Esc in the picker leaves the chart as it was.
        await pilot.press("o")
        await pilot.press("escape")
        await pilot.pause()
        assert chart.overlay is None and chart.legend == ("train",)


async def test_the_overlay_goes_with_its_deleted_run_and_needs_another_run(workspace):
    make_run(workspace)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        await pilot.press("o")
        assert "No other run to compare with" in text(app, "#train-message")
        assert type(app.screen).__name__ == "TrainScreen"
        make_other_run(workspace)
        train = app.screen
        train.list_runs()
        await until(pilot, lambda: len(train.rows) == 2, "the second run listed")
        await pilot.press("o", "enter")
        chart = train.query_one("#train-chart")
        await chart_has(pilot, chart, (RUN_ID, OTHER_ID), "the overlay")
        shutil.rmtree(workspace / "runs" / OTHER_ID)
        train.list_runs()
        await until(pilot, lambda: chart.overlay is None, "the deleted run's overlay gone", timeout=10)


async def test_a_preference_run_shows_its_reward_margin_and_accuracy(workspace):
    make_run(workspace)
    make_preference_run(workspace)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, "20261201-090000-dpo"), "the DPO run")
        stats = text(app, "#train-stats")
        assert "loss 0.3900  margin 0.7000  acc 87.5%  eval 0.4500" in stats
        snap = app.screen.snapshot
        assert snap.reward("eval_reward_accuracy") == 0.8125 and snap.reward("reward_rejected") == pytest.approx(-1.2)
        # Another (SFT) run shows nothing new.
        app.screen.query_one("#train-runs").focus()
        await pilot.press("down")
        await until(pilot, lambda: shown(app, RUN_ID), "the SFT run")
        stats = text(app, "#train-stats")
        assert "margin" not in stats and "acc" not in stats

"""Snapshots of the Train step: a finished run and a live one, at 100x32 and 80x24, and a run with
another run's loss overlaid (o).

Everything on screen comes from files written by hand from a recorded run, with a
fixed "now" (``app.clock``) for ages and ETAs and a fixed GPU reading.
"""

from __future__ import annotations

import json

from test_runs_compare import OTHER_ID, make_other_run
from test_train_screen import (CREATED, NOW, RUN_ID, first_lines, live_state, make_app, make_run, shown,
                               until)

from tuitune.train.runview import GpuStat


class OneGpu:
    def read(self):
        return [GpuStat(0, "NVIDIA RTX 4090", 18.2, 23.6, 97)]


def settled(tab: str | None = None, run_id: str = RUN_ID):
    async def run_before(pilot):
        app = pilot.app
        await until(pilot, lambda: shown(app, run_id), "the dashboard")
        if tab:
            await pilot.press(tab)
        chart = app.screen.query_one("#train-chart")
        await until(pilot, lambda: chart.up_to_date and chart.points[0] == app.screen.snapshot.loss_points,
                    "the chart")
        await pilot.wait_for_scheduled_animations()  # the tab underline slides
        await pilot.pause()

    return run_before


def finished_workspace(ws):
    make_run(ws)
    make_run(ws, "20261123-150102-first-try", created=CREATED - 7300, lines=first_lines(2), status="failed",
             step=5, last_loss=7.14, error="CUDA out of memory: lower training.batch_size or max_length",
             log="=== start\ntorch.OutOfMemoryError: CUDA out of memory.\n")
    return ws


def live_workspace(ws):
    lines = first_lines(12)
    make_run(ws, lines=lines, **live_state(), step=55, last_loss=json.loads(lines[-1])["loss"],
             log="=== start\nlora: 384,640 of 999,808 parameters trainable (38.47%)\n"
                 " 54%|█████▍    | 54/100 [01:53<01:33,  2.03s/it]\n"
                 " 55%|█████▌    | 55/100 [01:55<01:30,  2.01s/it]\n")
    now = json.loads([l for l in lines if '"type": "train"' in l][-1])["time"] + 4
    app = make_app(ws, now=now)
    app.gpu_probe = OneGpu()
    return app


def test_finished_run_100x32(snap_compare, fixed_workspace):
    app = make_app(finished_workspace(fixed_workspace), now=NOW)
    assert snap_compare(app, terminal_size=(100, 32), run_before=settled())


def test_finished_run_samples_80x24(snap_compare, fixed_workspace):
    app = make_app(finished_workspace(fixed_workspace), now=NOW)
    assert snap_compare(app, terminal_size=(80, 24), run_before=settled("a"))


def test_live_run_100x32(snap_compare, fixed_workspace):
    assert snap_compare(live_workspace(fixed_workspace), terminal_size=(100, 32), run_before=settled())


def test_live_run_80x24(snap_compare, fixed_workspace):
    assert snap_compare(live_workspace(fixed_workspace), terminal_size=(80, 24), run_before=settled())


def test_live_run_log_80x24(snap_compare, fixed_workspace):
    assert snap_compare(live_workspace(fixed_workspace), terminal_size=(80, 24), run_before=settled("l"))


def test_failed_run_80x24(snap_compare, fixed_workspace):
    app = make_app(finished_workspace(fixed_workspace), now=NOW)

    async def run_before(pilot):
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        app.screen.query_one("#train-runs").focus()
        await pilot.press("down")
        await settled(run_id="20261123-150102-first-try")(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_finished_run_log_scale_100x32(snap_compare, fixed_workspace):
    app = make_app(finished_workspace(fixed_workspace), now=NOW)
    assert snap_compare(app, terminal_size=(100, 32), run_before=settled("v"))


def test_resume_picks_a_checkpoint_80x24(snap_compare, fixed_workspace):
    folder = make_run(fixed_workspace, status="stopped", step=75)
    for n in (25, 50, 75):
        cp = folder / "checkpoints" / f"checkpoint-{n}"
        cp.mkdir(parents=True)
        (cp / "trainer_state.json").write_text("{}")
    app = make_app(fixed_workspace, now=NOW)

    async def run_before(pilot):
        await settled()(pilot)
        await pilot.press("r")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def overlaid(pick: bool = True):
    """Settled on the newest run, then o; with ``pick``, Enter overlays the lower-lr run."""
    async def run_before(pilot):
        await settled()(pilot)
        await pilot.press("o")
        if not pick:
            await pilot.pause()
            return
        await pilot.press("enter")
        chart = pilot.app.screen.query_one("#train-chart")
        await until(pilot, lambda: chart.up_to_date and OTHER_ID in chart.legend, "the overlay")
        await pilot.pause()

    return run_before


def test_overlay_80x24(snap_compare, fixed_workspace):
    make_other_run(finished_workspace(fixed_workspace))
    assert snap_compare(make_app(fixed_workspace, now=NOW), terminal_size=(80, 24), run_before=overlaid())


def test_overlay_120x36(snap_compare, fixed_workspace):
    make_other_run(finished_workspace(fixed_workspace))
    assert snap_compare(make_app(fixed_workspace, now=NOW), terminal_size=(120, 36), run_before=overlaid())


def test_overlay_picker_80x24(snap_compare, fixed_workspace):
    make_other_run(finished_workspace(fixed_workspace))
    assert snap_compare(make_app(fixed_workspace, now=NOW), terminal_size=(80, 24), run_before=overlaid(pick=False))

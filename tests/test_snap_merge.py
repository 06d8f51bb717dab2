"""Snapshots of the Merge step: the adapters to pick from, and a finished, verified merge (its result
and footer name e Export).

The run folders are written by hand (no model is loaded); the finished state is the
screen's own Done message carrying a fixed result, so every figure is the same each run.
"""

from __future__ import annotations

from test_merge_screen import RUN, make_app, workspace_with_runs

from tuitune.merge import MergeResult, Verification


async def _settled(pilot):
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def test_adapters_to_pick_from_100x32(snap_compare, fixed_workspace):
    app = make_app(workspace_with_runs(fixed_workspace))
    assert snap_compare(app, terminal_size=(100, 32), run_before=_settled)


def _verified_merge(snap_compare, fixed_workspace, size) -> bool:
    ws = workspace_with_runs(fixed_workspace)
    app = make_app(ws)

    async def finished(pilot):
        await pilot.pause()
        screen = app.screen
        result = MergeResult(out=ws / "models" / f"{RUN}-merged", shards=3, tensors=26, bytes=2_497_536,
                             dtype="fp32", streamed=True, fallback=None, untied=False, seconds=4.2,
                             verification=Verification(ok=True, max_abs_diff=8.9e-07, tolerance=1.3e-4,
                                                       top1_agree=1.0, prompts=3, dtype="fp32"))
        screen.query_one("#merge-progress").display = True
        screen.post_message(screen.Progress(26, 26, 3, 3))
        screen.post_message(screen.Done(result))
        await _settled(pilot)

    return snap_compare(app, terminal_size=size, run_before=finished)


def test_a_verified_merge_100x32(snap_compare, fixed_workspace):
    assert _verified_merge(snap_compare, fixed_workspace, (100, 32))


def test_a_verified_merge_names_export_80x24(snap_compare, fixed_workspace):
    """The footer keeps e Export with the other keys and q; the result names e before o (#20 item 4)."""
    assert _verified_merge(snap_compare, fixed_workspace, (80, 24))


def test_a_verified_merge_names_export_120x36(snap_compare, fixed_workspace):
    assert _verified_merge(snap_compare, fixed_workspace, (120, 36))


def test_adapters_to_pick_from_80x24(snap_compare, fixed_workspace):
    app = make_app(workspace_with_runs(fixed_workspace))
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settled)


def test_the_output_exists_question_80x24(snap_compare, fixed_workspace):
    ws = workspace_with_runs(fixed_workspace)
    merged = ws / "models" / f"{RUN}-merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    app = make_app(ws)

    async def asked(pilot):
        await _settled(pilot)
        await pilot.press("m")
        await _settled(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=asked)


def test_a_long_error_wraps_80x24(snap_compare, fixed_workspace):
    app = make_app(workspace_with_runs(fixed_workspace))

    async def failed(pilot):
        await _settled(pilot)
        await pilot.press("m")  # the hand-written run has no base model: a long one-line error
        await pilot.app.workers.wait_for_complete()
        await _settled(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=failed)

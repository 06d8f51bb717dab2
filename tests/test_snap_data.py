"""Snapshots of the Data screen's main states (review the SVGs before accepting a change)."""

from __future__ import annotations

from tests.test_data_screen import fill_workspace, open_file, settle


async def _stable(app, pilot):
    from screens.widgets.data.filetree import DataFileTree

    await settle(app, pilot)
    tree = app.screen.query_one(DataFileTree)
    for _ in range(200):  # the tree's folders read (it rereads them itself after a write)
        if tree.settled:
            break
        await pilot.pause(0.05)
    await pilot.pause()
    app.screen.set_focus(None)  # no blinking cursor in the picture
    await pilot.pause()


def test_snap_data_file_preview(snap_compare, fixed_workspace):
    from screens.app import TuituneApp

    fill_workspace(fixed_workspace)

    async def run_before(pilot):
        await settle(pilot.app, pilot)
        await open_file(pilot.app, pilot, "medqa_sample.xlsx")

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(100, 32), run_before=run_before)


def test_snap_data_convert_report(snap_compare, fixed_workspace):
    from screens.app import TuituneApp

    fill_workspace(fixed_workspace)

    async def run_before(pilot):
        app = pilot.app
        await settle(app, pilot)
        await open_file(app, pilot, "medqa_sample.xlsx")
        await pilot.press("f3")
        app.screen.query_one("#conv-preset").press()
        await pilot.pause()
        await pilot.press("ctrl+r")
        await _stable(app, pilot)
        app.screen.query_one("#convert-result").scroll_visible(animate=False)
        await pilot.pause()

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(100, 32), run_before=run_before)


def test_snap_data_tokens(snap_compare, fixed_workspace, tiny_model):
    from screens.app import TuituneApp

    fill_workspace(fixed_workspace, tiny_model)

    async def run_before(pilot):
        app = pilot.app
        await settle(app, pilot)
        await pilot.press("f5")
        app.screen.query_one("#tok-file").value = "data/self_cognition.jsonl"
        app.screen.query_one("#tok-record").value = "2"
        await pilot.press("ctrl+r")
        await _stable(app, pilot)

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(100, 32), run_before=run_before)


def test_snap_data_selfcog_80x24(snap_compare, fixed_workspace):
    from screens.app import TuituneApp

    async def run_before(pilot):
        app = pilot.app
        await settle(app, pilot)
        await pilot.press("f6")
        app.screen.query_one("#sc-name").focus()
        await pilot.press(*"Alice", "enter")
        await _stable(app, pilot)

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(80, 24), run_before=run_before)


def test_snap_data_overwrite_question_80x24(snap_compare, fixed_workspace):
    """Generate over an existing file: the question (overwrite / new name / cancel), whole at 80x24."""
    from screens.app import TuituneApp

    fill_workspace(fixed_workspace)

    async def run_before(pilot):
        app = pilot.app
        await settle(app, pilot)
        await pilot.press("f6")
        app.screen.query_one("#sc-name").value = "Alice"
        app.screen.query_one("#sc-out").value = "data/self_cognition.jsonl"
        await _stable(app, pilot)
        await pilot.press("ctrl+r")
        await pilot.pause()

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(80, 24), run_before=run_before)


def test_snap_data_file_tree_80x24(snap_compare, fixed_workspace):
    """The File tab at 80x24 with names that differ only in their extension: each reads whole."""
    import shutil

    from screens.app import TuituneApp
    from tests.conftest import ROOT

    fill_workspace(fixed_workspace)
    shutil.copy(ROOT / "sample_data" / "sharegpt_sample.json", fixed_workspace / "data" / "sharegpt_sample.json")
    (fixed_workspace / "data" / "sharegpt_sample.jsonl").write_text("")

    async def run_before(pilot):
        await settle(pilot.app, pilot)
        await open_file(pilot.app, pilot, "sharegpt_sample.json")
        await _stable(pilot.app, pilot)

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(80, 24), run_before=run_before)


def _long_names(ws):
    """#20 item 14: names cut alike at the end ("MedInfo2019-QA-Medicat" twice); now cut in the middle."""
    fill_workspace(ws)
    for name in ("MedInfo2019-QA-Medications.xlsx", "MedInfo2019-QA-Medications.jsonl", "chat-transcripts.jsonl",
                 "clinic-transcripts-2024-q3-final-reviewed.jsonl"):
        (ws / "data" / name).write_text("")


def test_snap_data_tree_long_names_80x24(snap_compare, fixed_workspace):
    from screens.app import TuituneApp

    _long_names(fixed_workspace)

    async def run_before(pilot):
        await _stable(pilot.app, pilot)

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(80, 24), run_before=run_before)


def test_snap_data_tree_long_names_120x36(snap_compare, fixed_workspace):
    from screens.app import TuituneApp

    _long_names(fixed_workspace)

    async def run_before(pilot):
        await _stable(pilot.app, pilot)

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=(120, 36), run_before=run_before)

"""The Data screen, driven by keyboard through Textual's pilot."""

from __future__ import annotations

import time

import json
import shutil
from pathlib import Path

from tests.conftest import ROOT


def fill_workspace(ws: Path, model: Path | None = None) -> Path:
    for f in ("medqa_sample.xlsx", "alpaca_sample.json", "self_cognition.jsonl"):
        shutil.copy(ROOT / "sample_data" / f, ws / "data" / f)
    if model is not None:
        shutil.copytree(model, ws / "models" / "tiny-chat")
    return ws


async def settle(app, pilot) -> None:
    """Wait for the screen's workers (the tree's loader runs forever, so not all workers)."""
    from screens.widgets.data_filetree import DataFileTree

    for _ in range(50):
        await pilot.pause()
        pending = [w for w in app.workers if w.group.startswith("data-") and not w.is_finished]
        if not pending:
            break
        await app.workers.wait_for_complete(pending)
    await pilot.pause()
    assert app.screen.query_one(DataFileTree).root.children


async def open_file(app, pilot, name: str) -> None:
    from screens.widgets.data_filetree import DataFileTree

    tree = app.screen.query_one(DataFileTree)
    tree.focus()
    # The tree reads folders in its own worker: wait (with a deadline) for the file to be listed.
    deadline = time.monotonic() + 60
    target = None
    while target is None:
        data = next((n for n in tree.root.children if n.data.path.name == "data"), None)
        target = next((n for n in data.children if n.data.path.name == name), None) if data else None
        if target is None:
            assert time.monotonic() < deadline, f"{name} never appeared in the file tree"
            if data is not None and not data.is_expanded:
                data.expand()  # as a user would press Enter on data/
            await pilot.pause(0.05)
    while tree.cursor_node is not target:
        await pilot.press("down")
    await pilot.press("enter")
    await settle(app, pilot)


async def test_pick_convert_split_inspect_by_keyboard(workspace, tiny_model):
    from textual.widgets import DataTable, Input, Static

    from screens.app import TuituneApp

    fill_workspace(workspace, tiny_model)
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "medqa_sample.xlsx")
        screen = app.screen
        detected = str(screen.query_one("#preview-result", Static).render())
        assert "xlsx" in detected and "DrugQA" in detected
        table = screen.query_one("#data-preview", DataTable)
        assert table.row_count >= 20 and "Question" in str(table.ordered_columns[0].label)
        assert screen.query_one("#conv-input").value == "Question"
        assert screen.query_one("#conv-output").value == "Answer"
        # Convert tab, MedQA preset, convert with ctrl+r.
        await pilot.press("f3")
        screen.query_one("#conv-preset").press()
        await pilot.pause()
        assert screen.query_one("#conv-system", Input).value.startswith("You are a professional")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        report = str(screen.query_one("#convert-result", Static).render())
        assert "kept 41 of 44" in report and "row 42: empty 'Answer'" in report and "--dedupe" in report
        out = workspace / "data" / "medqa_sample.jsonl"
        recs = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
        assert len(recs) == 41 and recs[0]["conversation"][0]["system"].startswith("You are a professional")
        # Split grouped by question.
        await pilot.press("f4")
        assert screen.query_one("#split-file", Input).value == "data/medqa_sample.jsonl"
        screen.query_one("#split-ratio", Input).focus()
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert (workspace / "data" / "train.jsonl").exists() and (workspace / "data" / "test.jsonl").exists()
        assert "train:" in str(screen.query_one("#split-result", Static).render())
        # Tokens of the train file.
        await pilot.press("f5")
        assert screen.query_one("#tok-model", Input).value == "models/tiny-chat"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        stats = str(screen.query_one("#tokens-result", Static).render())
        assert "median" in stats and "p95" in stats
        view = screen.query_one("#tok-view").render()
        assert "<|im_start|>assistant↵" in str(view) and "trained" in str(view)


async def test_selfcog_form_and_errors_stay_in_place(workspace):
    from textual.widgets import Input, Static

    from screens.app import TuituneApp

    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f6")
        screen = app.screen
        screen.query_one("#sc-name", Input).focus()
        await pilot.press("ctrl+r")
        assert "give a name" in str(screen.query_one("#selfcog-result", Static).render())
        await pilot.press(*"Ada")
        await pilot.press("enter")
        await settle(app, pilot)
        out = workspace / "data" / "self_cognition.jsonl"
        assert out.exists() and "Ada" in out.read_text(encoding="utf-8")
        assert "wrote 150 records" in str(screen.query_one("#selfcog-result", Static).render())
        # A bad file shows one error line in the tab and keeps the user's input.
        bad = workspace / "data" / "bad.jsonl"
        bad.write_text('{"conversation": [{"input": "q", "output": ""}]}\n')
        await pilot.press("f4")
        screen.query_one("#split-file", Input).value = "data/bad.jsonl"
        screen.query_one("#split-file", Input).focus()
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        msg = str(screen.query_one("#split-result", Static).render())
        assert msg.startswith("error:") and "bad.jsonl" in msg and "line 1" in msg
        assert screen.query_one("#split-file", Input).value == "data/bad.jsonl"


async def test_bad_xlsx_shows_error_in_preview(workspace):
    from textual.widgets import Static

    from screens.app import TuituneApp

    (workspace / "data" / "fake.xlsx").write_text("not a workbook")
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "fake.xlsx")
        msg = str(app.screen.query_one("#preview-result", Static).render())
        assert msg.startswith("error:") and "fake.xlsx" in msg and "xlsx" in msg


async def test_json_file_converts_without_column_mapping(workspace):
    from textual.widgets import Static

    from screens.app import TuituneApp

    fill_workspace(workspace)
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "alpaca_sample.json")
        screen = app.screen
        assert "alpaca" in str(screen.query_one("#preview-result", Static).render())
        await pilot.press("f3")
        assert not screen.query_one("#conv-input").parent.display  # no columns to map for JSON
        assert screen.query_one("#conv-out").value == "data/alpaca_sample.jsonl"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert "kept 6 of 6" in str(screen.query_one("#convert-result", Static).render())
        recs = [json.loads(l) for l in (workspace / "data/alpaca_sample.jsonl").read_text("utf-8").splitlines()]
        assert len(recs) == 6
        # F1 shows the focused field's help.
        screen.query_one("#conv-system").focus()
        await pilot.press("f1")
        await pilot.pause()
        from textual.widgets import Markdown

        assert "system prompt" in app.screen.query_one(Markdown).source.lower()

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
    from screens.widgets.data.filetree import DataFileTree

    for _ in range(50):
        await pilot.pause()
        pending = [w for w in app.workers if w.group.startswith("data-") and not w.is_finished]
        if not pending:
            break
        await app.workers.wait_for_complete(pending)
    await pilot.pause()
    assert app.screen.query_one(DataFileTree).root.children


async def open_file(app, pilot, name: str) -> None:
    from screens.widgets.data.filetree import DataFileTree

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
    while tree.cursor_node is not target:  # up or down to it (down only looped forever on a file above)
        await pilot.press("down" if tree.cursor_line < target.line else "up")
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
        assert "kept 41 of 44" in report and "row 42: empty 'Answer'" in report and "the 'dedupe' box drops them" in report
        assert "--" not in report  # the TUI names its fields, not the CLI's flags
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
        assert "Name: give the name" in str(screen.query_one("#selfcog-result", Static).render())
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


# --- issue 12: nothing overwritten unasked, tab keys from anywhere, numbers only, labels ---------

async def test_generate_over_an_existing_file_asks_and_the_default_is_bumped(workspace):
    """#2: data/self_cognition.jsonl exists: the default is -2; writing over it asks (o / n / c)."""
    from textual.widgets import Input, Static

    from screens.app import TuituneApp
    from screens.widgets.choice import ChoiceScreen

    fill_workspace(workspace)
    existing = workspace / "data" / "self_cognition.jsonl"
    original = existing.read_bytes()
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        await pilot.press("f6")
        out = screen.query_one("#sc-out", Input)
        assert out.value == "data/self_cognition-2.jsonl"
        screen.query_one("#sc-name", Input).value = "Ada"
        out.value = "data/self_cognition.jsonl"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("c")  # cancel: nothing written
        await pilot.pause()
        assert existing.read_bytes() == original
        assert "Not written" in str(screen.query_one("#selfcog-result", Static).render())
        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("n")  # a new name: written beside it
        await settle(app, pilot)
        assert existing.read_bytes() == original
        assert "Ada" in (workspace / "data" / "self_cognition-2.jsonl").read_text(encoding="utf-8")
        assert out.value == "data/self_cognition-2.jsonl"
        out.value = "data/self_cognition.jsonl"
        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("o")  # overwrite, as asked
        await settle(app, pilot)
        assert "Ada" in existing.read_text(encoding="utf-8")


async def test_convert_and_split_over_existing_files_ask(workspace):
    from textual.widgets import Input

    from screens.app import TuituneApp
    from screens.widgets.choice import ChoiceScreen

    fill_workspace(workspace)
    (workspace / "data" / "alpaca_sample.jsonl").write_text("old\n")
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "alpaca_sample.json")
        screen = app.screen
        await pilot.press("f3")
        assert screen.query_one("#conv-out", Input).value == "data/alpaca_sample-2.jsonl"  # bumped
        screen.query_one("#conv-out", Input).value = "data/alpaca_sample.jsonl"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert (workspace / "data" / "alpaca_sample.jsonl").read_text() == "old\n"
        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("o")
        await settle(app, pilot)
        assert (workspace / "data" / "alpaca_sample.jsonl").read_text() != "old\n"
        # Split into a folder that already has train.jsonl: asks; n writes a new folder.
        (workspace / "data" / "train.jsonl").write_text("keep\n")
        await pilot.press("f4")
        screen.query_one("#split-file", Input).value = "data/alpaca_sample.jsonl"
        screen.query_one("#split-out", Input).value = "data"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("n")
        await settle(app, pilot)
        assert (workspace / "data" / "train.jsonl").read_text() == "keep\n"
        assert (workspace / "data" / "alpaca_sample-split" / "test.jsonl").exists()
        assert screen.query_one("#split-out", Input).value == "data/alpaca_sample-split"


async def test_tab_keys_work_from_any_widget_and_focus_follows(workspace):
    """#6: F4 from the dedupe checkbox or the MedQA button switches; focus moves into the tab."""
    from textual.widgets import TabbedContent

    from screens.app import TuituneApp

    fill_workspace(workspace)
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "medqa_sample.xlsx")
        screen = app.screen
        tabs = screen.query_one("#data-tabs", TabbedContent)
        await pilot.press("f3")
        assert app.focused is not None and screen.query_one("#tab-convert") in app.focused.ancestors
        for wid in ("conv-dedupe", "conv-preset", "conv-drop"):
            screen.query_one(f"#{wid}").focus()
            await pilot.pause()
            await pilot.press("f4")
            await pilot.pause()
            assert tabs.active == "tab-split", wid
            assert app.focused.id == "split-file", wid
            await pilot.press("f3")
            await pilot.pause()
        await pilot.press("f2")
        await pilot.pause()
        assert tabs.active == "tab-file" and app.focused.id == "data-tree"
        await pilot.press("f6")
        await pilot.press(*"Ada")  # typed straight into the tab shown
        assert screen.query_one("#sc-name").value == "Ada"


async def test_number_fields_take_numbers_only_and_keys_follow_the_focus(workspace):
    """#7: `_` and letters never enter Test ratio; keys typed right after Tab land in the next field."""
    from textual import events
    from textual.widgets import Input

    from screens.app import TuituneApp

    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        await pilot.press("f4")
        ratio = screen.query_one("#split-ratio", Input)
        ratio.focus()
        ratio.value = ""
        await pilot.press(*"7_a0.25")
        assert ratio.value == "70.25"
        seed = screen.query_one("#split-seed", Input)
        seed.value = ""
        seed.focus()
        await pilot.press(*"1_000")
        assert seed.value == "1000"
        # A burst (as over a slow link): shift+tab and the text arrive before any redraw.
        screen.query_one("#split-ratio", Input).focus()
        await pilot.pause()
        burst = [events.Key("shift+tab", None)] + [
            events.Key("slash" if ch == "/" else "underscore" if ch == "_" else ch, ch) for ch in "data/sc_split"]
        for event in burst:  # all queued at once, as the terminal driver would (no idle wait between)
            event.set_sender(app)
            app._driver.send_message(event)
        await pilot.pause()
        await pilot.pause()
        assert screen.query_one("#split-file", Input).value == "data/sc_split"
        assert ratio.value == "70.25"


async def test_checkboxes_read_without_colour(workspace):
    """#8: [x] / [ ] in the text itself, and it follows the value."""
    from screens.app import TuituneApp

    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        await pilot.press("f4")
        group = screen.query_one("#split-group")
        assert str(group.render()).startswith("[x] keep each question")
        group.focus()
        await pilot.press("enter")
        assert str(group.render()).startswith("[ ] keep each question") and group.value is False
        await pilot.press("f3")
        assert str(screen.query_one("#conv-dedupe").render()).rstrip() == "[ ] dedupe"


async def test_errors_and_help_name_fields_by_their_labels(workspace):
    """#13: "Test ratio 1.5: ..." (not --test-ratio); F1 says "This field: Seed" (not sc-seed)."""
    from textual.widgets import Input, Markdown, Static

    from screens.app import TuituneApp

    fill_workspace(workspace)
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        await pilot.press("f4")
        screen.query_one("#split-file", Input).value = "data/self_cognition.jsonl"
        screen.query_one("#split-ratio", Input).value = "1.5"
        await pilot.press("ctrl+r")
        await pilot.pause()
        msg = str(screen.query_one("#split-result", Static).render())
        assert "Test ratio 1.5: must be between 0 and 1" in msg and "--" not in msg
        await pilot.press("f6")
        screen.query_one("#sc-name", Input).value = "Ada"
        screen.query_one("#sc-count", Input).value = "100000"
        await pilot.press("ctrl+r")
        await pilot.pause()
        msg = str(screen.query_one("#selfcog-result", Static).render())
        assert msg.startswith("error: Count 100000: the phrasings make only") and "--" not in msg
        screen.query_one("#sc-seed").focus()
        await pilot.press("f1")
        await pilot.pause()
        text = app.screen.query_one(Markdown).source
        assert "This field: Seed" in text and "sc-seed" not in text


async def test_split_report_counts_each_side(workspace):
    """#9: the test side's distinct questions are its own, not the whole file's."""
    from textual.widgets import Input, Static

    from screens.app import TuituneApp

    recs = [{"conversation": [{"input": f"q{q}", "output": f"a{q}.{k}"}]} for q in range(40) for k in range(3)]
    (workspace / "data" / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        await pilot.press("f4")
        screen.query_one("#split-file", Input).value = "data/all.jsonl"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        text = str(screen.query_one("#split-result", Static).render())
        assert "test:  36 records, 12 distinct questions" in text
        assert "train: 84 records, 28 distinct questions" in text and "no question is on both sides" in text


async def test_at_80x24_file_names_differing_only_in_extension_read_whole_in_the_tree(workspace):
    """The tree is as wide as its names: ``sharegpt_sample.json`` and ``.jsonl``, both
    ``alpaca_sample.*`` files, read whole and apart at 80 columns (they were cut alike)."""
    from test_merge_screen import visible_lines

    from screens.app import TuituneApp
    from screens.widgets.data.filetree import DataFileTree

    names = ["sharegpt_sample.json", "sharegpt_sample.jsonl", "alpaca_sample.json", "alpaca_sample.jsonl",
             "self_cognition.jsonl"]
    for name in names:
        (workspace / "data" / name).write_text("[]\n" if name.endswith(".json") else "")
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tree = app.screen.query_one(DataFileTree)
        deadline = time.monotonic() + 60
        while not any(n.data.path.name == "data" and len(n.children) == len(names)
                                                  for n in tree.root.children):
            assert time.monotonic() < deadline, "the data folder never listed its files"
            await pilot.pause(0.05)
        await pilot.pause()
        shown = [line.split("📄")[-1].strip(" ▕│") for line in visible_lines(app.screen, tree) if "📄" in line]
        assert sorted(shown) == sorted(names), shown

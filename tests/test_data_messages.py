"""The Data step's messages in the TUI's words (#20 items 11 and 12): the same engine message
names flags in the CLI (tests/test_data_convert.py) and the controls' labels here, and says
the fix; Convert with nothing to convert names the missing input, not the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_data_convert import QA, workbook
from tests.test_data_screen import fill_workspace, open_file, settle
from tuitune.errors import TuituneError


def _raise(call) -> str:
    try:
        call()
    except TuituneError as exc:
        return str(exc)
    raise AssertionError("no error")


def _empty_sheet(d: Path) -> str:
    from tuitune.data.convert import preview

    return _raise(lambda: preview(workbook(d / "m.xlsx", {"QA": QA, "Notes": []}), sheet="Notes"))


def _one_empty_sheet(d: Path) -> str:
    from tuitune.data.convert import preview

    return _raise(lambda: preview(workbook(d / "e.xlsx", {"Sheet": []})))


def _medqa_note(d: Path) -> str:
    from tuitune.data.convert import convert

    return next(l for l in convert(ROOT / "sample_data" / "medqa_sample.xlsx", None).lines() if "--preset" in l)


def _no_columns(d: Path) -> str:
    from tuitune.data.convert import convert

    return _raise(lambda: convert(workbook(d / "x.xlsx", {"S": [["x", "y"], ["1", "2"]]}), None))


def _unknown_fields(d: Path) -> str:
    from tuitune.data.formats import detect_format

    (d / "odd.json").write_text(json.dumps([{"ask": "q", "say": "a"}]))
    return _raise(lambda: detect_format(d / "odd.json"))


def _unknown_extension(d: Path) -> str:
    from tuitune.data.formats import detect_format

    (d / "notes.data").write_text("hello")
    return _raise(lambda: detect_format(d / "notes.data"))


def _bad_record(d: Path) -> str:
    from tuitune.data.convert import convert

    (d / "a.json").write_text(json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q", "output": [1]}]))
    return _raise(lambda: convert(d / "a.json", None))


def _bad_line(d: Path) -> str:
    from tuitune.data.io import load_records

    (d / "b.jsonl").write_text('{"conversation": [{"input": "q", "output": "a"}]}\n{oops\n')
    return _raise(lambda: load_records(d / "b.jsonl"))


def _not_utf8_line(d: Path) -> str:
    from tuitune.data.io import load_records

    (d / "c.jsonl").write_bytes(b'{"conversation": [{"input": "q\xa7", "output": "a"}]}\n')
    return _raise(lambda: load_records(d / "c.jsonl"))


def _spreadsheet(d: Path) -> str:
    from tuitune.data.io import load_records

    return _raise(lambda: load_records(workbook(d / "t.xlsx", {"S": QA})))


def _repeated(d: Path) -> str:
    from tuitune.data.convert import convert

    return next(l for l in convert(workbook(d / "r.xlsx", {"S": [["Question", "Answer"], ["q", "a"], ["q", "b"]]}),
                                   None).lines() if "--group-by" in l)


#: (engine message maker, what the CLI says, what the Data step says instead)
CASES = [
    (_empty_sheet, "pick another with --sheet", "pick another in the Sheet list"),
    (_one_empty_sheet, "the workbook has no rows", "the workbook has no rows (its only sheet, 'Sheet', is empty); "
                                                   "fill in a header row and data rows, or pick another file"),
    (_medqa_note, "--preset medqa adds the tutorial's system prompt",
     "the MedQA preset button adds the tutorial's system prompt"),
    (_no_columns, "pass --input-col and --output-col", "pick them in the Question and Answer lists"),
    (_unknown_fields, "--input-col/--output-col", "map them from a shell: `tuitune data convert FILE --input-col"),
    (_unknown_extension, "pass --format", "rename it to .jsonl, .json, .csv, .xlsx or .txt"),
    (_bad_record, "use --format to pick another format", "fix it in the file"),
    (_bad_line, "--skip-bad-lines", "fix that line in the file"),
    (_not_utf8_line, "--skip-bad-lines", "save the file as UTF-8"),
    (_spreadsheet, "convert it first: tuitune data convert", "convert it first in the Convert tab (F3)"),
    (_repeated, "split with --group-by input", "split with Group on (Split tab)"),
]


@pytest.mark.parametrize("make, cli, tui", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_each_engine_message_reads_right_in_the_cli_and_in_the_data_step(tmp_path, make, cli, tui):
    """The engine's message as raised today (so a reworded one fails here, not on a user's screen)."""
    import re

    from screens.widgets.data.tab_form import words as engine_error

    message = make(tmp_path)
    assert cli in message, message
    for tab in ("preview", "convert", "split", "tokens"):
        shown = engine_error(tab, message)
        assert tui in shown, (tab, shown)
        assert not re.search(r"(?<![\w-])--[a-z]", re.sub(r"`[^`]*`", "", shown)), shown  # a shell line may


# --- in the app ------------------------------------------------------------------------------

def result(app, wid: str) -> str:
    from textual.widgets import Static

    return str(app.screen.query_one(f"#{wid}", Static).render())


async def test_convert_with_no_input_names_the_input_not_the_output(workspace):
    """#20 item 11: it said "give an output file, e.g. data/converted.jsonl" while Output showed data/out.jsonl."""
    from screens.app import TuituneApp

    workbook(workspace / "data" / "empty.xlsx", {"Sheet": []})
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f3", "ctrl+r")
        await pilot.pause()
        msg = result(app, "convert-result")
        assert msg.startswith("error: no input file: pick the file to convert in the File tab (F2)"), msg
        # A picked file that cannot be read is no input either; the File tab says why, and so does Convert.
        await open_file(app, pilot, "empty.xlsx")
        assert "the workbook has no rows" in result(app, "preview-result")
        await pilot.press("f3", "ctrl+r")
        await pilot.pause()
        msg = result(app, "convert-result")
        assert msg.startswith("error: no input file: data/empty.xlsx could not be read: the workbook has no rows") \
            and msg.endswith("or pick another file in the File tab (F2)"), msg
        assert "output" not in msg.lower()
        assert "choose another sheet" not in msg and "Sheet (sheets" not in msg


async def test_convert_without_a_question_column_names_that_column(workspace):
    from textual.widgets import Select

    from screens.app import TuituneApp

    workbook(workspace / "data" / "odd.xlsx", {"S": [["x", "y"], ["q", "a"]]})
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "odd.xlsx")
        await pilot.press("f3")
        assert app.screen.query_one("#conv-input", Select).value is Select.NULL  # nothing to guess from
        await pilot.press("ctrl+r")
        await pilot.pause()
        msg = result(app, "convert-result")
        assert msg.startswith("error: no Question column: pick the column that holds the questions"), msg
        assert not (workspace / "data" / "odd.jsonl").exists()


async def test_medqa_preset_on_another_workbook_says_what_it_did_and_the_fix(workspace):
    """#20 item 12: the TUI names the button, not --preset, and says what to pick."""
    from textual.widgets import Input

    from screens.app import TuituneApp

    workbook(workspace / "data" / "other.xlsx", {"Sheet": [["Q", "A"], ["q", "a"]]})
    fill_workspace(workspace)
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        # The MedQA workbook converted without the preset: the note names the button.
        await open_file(app, pilot, "medqa_sample.xlsx")
        await pilot.press("f3", "ctrl+r")
        await settle(app, pilot)
        report = result(app, "convert-result")
        assert "the MedQA preset button adds the tutorial's system prompt" in report, report
        assert "--" not in report
        await pilot.press("f2")
        await open_file(app, pilot, "other.xlsx")
        await pilot.press("f3")
        app.screen.query_one("#conv-preset").press()
        await pilot.pause()
        msg = result(app, "convert-result")
        assert "MedQA preset: system prompt set; this workbook has no sheet 'DrugQA' (sheets: Sheet)" in msg, msg
        assert "pick the sheet and the Question and Answer columns yourself" in msg and "--" not in msg
        assert app.screen.query_one("#conv-system", Input).value.startswith("You are a professional")


async def test_an_empty_sheet_picked_says_so_in_convert_and_keeps_the_sheet_list(workspace):
    from textual.widgets import Select

    from screens.app import TuituneApp

    workbook(workspace / "data" / "multi.xlsx", {"Cover": [], "QA": QA, "Notes": []})
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "multi.xlsx")
        assert "sheet QA of Cover, QA, Notes" in result(app, "preview-result")  # the first sheet with rows
        await pilot.press("f3")
        sheet = app.screen.query_one("#conv-sheet", Select)
        sheet.value = "Notes"
        await settle(app, pilot)
        msg = result(app, "convert-result")
        assert "sheet 'Notes' is empty; pick another in the Sheet list (sheets with rows: QA)" in msg, msg
        assert sheet.parent.display and sheet.value == "Notes"
        sheet.value = "QA"
        await settle(app, pilot)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert "kept 1 of 1" in result(app, "convert-result")

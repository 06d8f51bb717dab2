"""The Data step's file tree keeps up with the folder (#20 item 3) and keeps long names'
extensions (#20 item 14): files copied into data/ while the app is open appear by themselves,
on ``r``, from the palette and on entering the step; names are shortened in the middle."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.conftest import ROOT
from tests.test_data_screen import fill_workspace, settle

DEADLINE = 30  # seconds: a bound on waiting, never a fixed wait


def names_in_data(tree) -> list[str]:
    data = next((n for n in tree.root.children if n.data.path.name == "data"), None)
    return [n.data.path.name for n in data.children] if data is not None else []


async def wait_for(pilot, check, what: str) -> None:
    """Pause until ``check()`` is true (at most DEADLINE seconds)."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, what
        await pilot.pause(0.05)


def tree_of(app):
    from screens.widgets.data.filetree import DataFileTree

    return app.screen.query_one(DataFileTree)


async def open_data(app, pilot):
    tree = tree_of(app)
    await wait_for(pilot, lambda: "self_cognition.jsonl" in names_in_data(tree), "data/ never listed its files")
    return tree


def app_for(workspace, start="data"):
    from screens.app import TuituneApp
    from tuitune.doctor import Report

    return TuituneApp(workspace, start=start, doctor=lambda w: Report())


@pytest.fixture
def no_poll(monkeypatch):
    """The tree's periodic look turned off, so only the path under test can show a new file."""
    from screens.widgets.data.filetree import DataFileTree

    monkeypatch.setattr(DataFileTree, "POLL_SECONDS", 3600, raising=False)


async def test_a_file_copied_in_while_open_appears_by_itself_and_the_cursor_stays(workspace):
    fill_workspace(workspace)
    app = app_for(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        tree = await open_data(app, pilot)
        tree.focus()
        while tree.cursor_node is None or tree.cursor_node.data.path.name != "self_cognition.jsonl":
            await pilot.press("down")
        shutil.copy(ROOT / "sample_data" / "alpaca_sample.json", workspace / "data" / "copied_over_ssh.json")
        await wait_for(pilot, lambda: "copied_over_ssh.json" in names_in_data(tree),
                       "a file copied into data/ never appeared in the tree")
        data = next(n for n in tree.root.children if n.data.path.name == "data")
        assert data.is_expanded
        assert tree.cursor_node.data.path.name == "self_cognition.jsonl"  # where the user was
        # A file removed goes too.
        (workspace / "data" / "copied_over_ssh.json").unlink()
        await wait_for(pilot, lambda: "copied_over_ssh.json" not in names_in_data(tree),
                       "a removed file stayed in the tree")


async def test_r_reads_the_folder_again(workspace, no_poll):
    fill_workspace(workspace)
    app = app_for(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tree = await open_data(app, pilot)
        (workspace / "data" / "new.jsonl").write_text("")
        for _ in range(5):
            await pilot.pause()
        assert "new.jsonl" not in names_in_data(tree)  # no poll here: only the key can show it
        assert "Reload files" in app.screen.active_bindings["r"].binding.description
        await pilot.press("r")
        await wait_for(pilot, lambda: "new.jsonl" in names_in_data(tree), "r did not show the new file")


async def test_entering_the_step_reads_the_folder_again(workspace, no_poll):
    fill_workspace(workspace)
    app = app_for(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tree = await open_data(app, pilot)
        app.screen.set_focus(None)
        await pilot.press("1")
        await wait_for(pilot, lambda: app.current_mode == "env", "1 did not open the Environment step")
        (workspace / "data" / "from_elsewhere.jsonl").write_text("")
        await pilot.press("2")
        await wait_for(pilot, lambda: "from_elsewhere.jsonl" in names_in_data(tree),
                       "coming back to Data did not show the new file")


async def test_the_palette_reloads_the_data_files(workspace, no_poll):
    from textual.command import CommandList, CommandPalette

    fill_workspace(workspace)
    app = app_for(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        tree = await open_data(app, pilot)
        (workspace / "data" / "by_palette.jsonl").write_text("")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "ctrl+p opened no palette")
        await pilot.press(*"reload data files")
        found = app.screen.query_one(CommandList)

        def first() -> str:
            return str(found.get_option_at_index(0).prompt) if found.option_count else ""

        await wait_for(pilot, lambda: "Data: Reload files" in first() and found.highlighted == 0,
                       "the palette did not offer Data: Reload files first")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "by_palette.jsonl" in names_in_data(tree),
                       "the palette's Reload did not show the new file")


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_long_names_keep_their_extension(workspace, size):
    """#20 item 14: "MedInfo2019-QA-Medicat" for both the .xlsx and the .jsonl at 80x24; now
    each keeps its extension and the two differ."""
    from tests.test_merge_screen import visible_lines

    fill_workspace(workspace)
    names = ["MedInfo2019-QA-Medications.xlsx", "MedInfo2019-QA-Medications.jsonl", "chat-transcripts.jsonl",
             "a-very-long-name-for-a-conversation-file-from-the-clinic-2024-final.jsonl"]
    for name in names:
        (workspace / "data" / name).write_text("")
    app = app_for(workspace)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        tree = await open_data(app, pilot)
        await wait_for(pilot, lambda: all(n in names_in_data(tree) for n in names), "the files never appeared")
        await pilot.pause()
        shown = [line.split("📄")[-1].strip(" ▕│") for line in visible_lines(app.screen, tree) if "📄" in line]
        med = [s for s in shown if s.startswith("MedInfo")]
        assert len(med) == 2 and med[0] != med[1], shown
        assert any(s.endswith(".xlsx") for s in med) and any(s.endswith(".jsonl") for s in med), shown
        long = next(s for s in shown if s.startswith("a-very"))
        assert "…" in long and long.endswith("-final.jsonl"[-8:]), shown
        assert "chat-transcripts.jsonl" in shown  # short enough: whole
        real = names_in_data(tree)
        for s in shown:  # each name whole, or its start and its end (extension included) around a …
            head, dots, tail = s.partition("…")
            assert any(n == s or (dots and n.startswith(head) and n.endswith(tail) and "." in tail) for n in real), s


def test_shorten_middle_keeps_start_and_extension():
    from screens.widgets.text import shorten_middle

    assert shorten_middle("short.jsonl", 20) == "short.jsonl"
    for width in (12, 16, 22, 30):
        s = shorten_middle("MedInfo2019-QA-Medications.xlsx", width)
        assert len(s) <= width and s.startswith("Med") and s.endswith(".xlsx") and "…" in s, (width, s)
    assert shorten_middle("data/chat-transcripts.jsonl", 24).endswith(".jsonl")


async def test_the_step_opens_with_the_cursor_on_data(workspace):
    """data/ is opened and the cursor put on it, so down then Enter picks its first file (the cursor
    stayed on the root: down, down, Enter closed data/)."""
    fill_workspace(workspace)
    app = app_for(workspace, start="env")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("2")  # as a user opens it
        await wait_for(pilot, lambda: app.current_mode == "data", "2 did not open the Data step")
        await settle(app, pilot)
        tree = await open_data(app, pilot)
        (workspace / "data" / "zz_copied.jsonl").write_text("")  # a poll's reread keeps the cursor too
        await wait_for(pilot, lambda: "zz_copied.jsonl" in names_in_data(tree) and tree.settled, "never listed")
        assert tree.cursor_node is not None and tree.cursor_node.data.path.name == "data"
        await pilot.press("down", "enter")
        await settle(app, pilot)
        assert app.screen.source is not None and app.screen.source.name == "alpaca_sample.json"

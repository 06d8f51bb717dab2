"""Snapshots of the Config screen: a valid form, and one with a bad value marked."""

from __future__ import annotations

import shutil

from tests.test_config import write_data
from tuitune.config import get_preset, save_config


def _workspace(root, tiny_model):
    shutil.copytree(tiny_model, root / "models" / "tiny-chat")
    write_data(root)
    save_config(get_preset("tiny-demo"), root / "configs" / "tiny-demo.yaml")
    return root


def make_app(root):
    from screens.app import TuituneApp

    return TuituneApp(root, start="config")


async def _settle(pilot):
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_config_valid_form(snap_compare, fixed_workspace, tiny_model):
    ws = _workspace(fixed_workspace, tiny_model)

    async def run_before(pilot):
        await _settle(pilot)
        r = pilot.app.screen.query_one("#f-lora-r")
        r.cursor_blink = False  # a blinking cursor makes the snapshot flaky
        r.focus()  # help for the focused field
        await _settle(pilot)

    assert snap_compare(make_app(ws), terminal_size=(100, 32), run_before=run_before)


def test_config_field_with_an_error(snap_compare, fixed_workspace, tiny_model):
    ws = _workspace(fixed_workspace, tiny_model)

    async def run_before(pilot):
        await _settle(pilot)
        lr = pilot.app.screen.query_one("#f-lora-r")
        lr.cursor_blink = False  # a blinking cursor makes the snapshot flaky
        lr.focus()
        lr.value = ""
        await pilot.press("0")
        await _settle(pilot)

    assert snap_compare(make_app(ws), terminal_size=(100, 32), run_before=run_before)


def test_config_80x24(snap_compare, fixed_workspace, tiny_model):
    ws = _workspace(fixed_workspace, tiny_model)
    assert snap_compare(make_app(ws), terminal_size=(80, 24), run_before=_settle)


def test_config_unsaved_edits_question_80x24(snap_compare, fixed_workspace, tiny_model):
    """q with an unsaved edit: save / discard / stay, whole at 80x24."""
    ws = _workspace(fixed_workspace, tiny_model)

    async def run_before(pilot):
        await _settle(pilot)
        lr = pilot.app.screen.query_one("#f-training-lr")
        lr.value = "0.003"
        pilot.app.screen.set_focus(None)
        await _settle(pilot)
        await pilot.press("q")
        await pilot.pause()

    assert snap_compare(make_app(ws), terminal_size=(80, 24), run_before=run_before)


def _long_labels_and_paths(size):
    """#20 item 14: the training section (gradient_checkpointing's label whole on one line) and the
    diff naming data/chat-transcripts.jsonl whole."""

    def test(snap_compare, fixed_workspace, tiny_model):
        ws = _workspace(fixed_workspace, tiny_model)
        write_data(ws, "data/chat-transcripts.jsonl")

        async def run_before(pilot):
            await _settle(pilot)
            screen = pilot.app.screen
            screen.query_one("#f-data-train").value = "data/chat-transcripts.jsonl"
            await _settle(pilot)
            row = screen.query_one("#row-training-gradient-checkpointing")
            screen.query_one("#cfg-form").scroll_to_widget(row, animate=False, top=True)
            screen.set_focus(None)
            await _settle(pilot)

        assert snap_compare(make_app(ws), terminal_size=size, run_before=run_before)

    return test


test_config_training_section_80x24 = _long_labels_and_paths((80, 24))
test_config_training_section_120x36 = _long_labels_and_paths((120, 36))

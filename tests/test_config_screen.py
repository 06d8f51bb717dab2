"""The Config screen, driven by keyboard through Textual's pilot on a real workspace."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_config import demo_ws, write_data  # noqa: F401 - demo_ws is a fixture
from tuitune.config import get_preset, load_config, save_config



def make_app(ws):
    from screens.app import TuituneApp

    return TuituneApp(ws, start="config")


async def settle(app, pilot):
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def type_into(pilot, app, selector: str, text: str):
    widget = app.screen.query_one(selector)
    widget.focus()
    await pilot.pause()
    widget.value = ""
    await pilot.press(*text)
    await pilot.pause()


def row(app, name: str):
    return next(f for f in app.screen.fields() if f.field_name == name)


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def test_bad_value_is_marked_and_save_waits_until_valid(demo_ws):
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        assert app.screen.query_one("#f-training-lr").value == "0.005"
        assert not app.screen.query_one("#cfg-save").disabled
        assert "✓ valid" in text_of(app, "#cfg-status") and "effective batch 16" in text_of(app, "#cfg-status")

        await type_into(pilot, app, "#f-training-lr", "-1")
        assert row(app, "training.lr").has_class("-invalid")
        assert "out of range" in str(row(app, "training.lr").query_one(".cfg-error").render())
        assert app.screen.query_one("#f-training-lr").has_class("-invalid")  # Textual's own marking
        assert app.screen.query_one("#cfg-save").disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert load_config(demo_ws / "configs" / "tiny-demo.yaml").training.lr == 0.005  # nothing written

        await type_into(pilot, app, "#f-training-lr", "0.001")
        assert not row(app, "training.lr").has_class("-invalid")
        assert not app.screen.query_one("#cfg-save").disabled
        assert "training.lr: 0.005 → 0.001" in text_of(app, "#cfg-diff")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
    assert load_config(demo_ws / "configs" / "tiny-demo.yaml").training.lr == 0.001


async def test_wrong_type_and_cross_field_errors(demo_ws):
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await type_into(pilot, app, "#f-lora-r", "1.5")
        assert "wrong type" in str(row(app, "lora.r").query_one(".cfg-error").render())
        await type_into(pilot, app, "#f-lora-r", "8")
        assert not app.screen.query_one("#cfg-save").disabled
        # node_rank must be below nnodes: a check across fields, shown on the field
        await type_into(pilot, app, "#f-distributed-node-rank", "3")
        assert app.screen.query_one("#cfg-save").disabled
        assert "node_rank" in text_of(app, "#cfg-status")


async def test_help_for_the_focused_field(demo_ws):
    from screens.help import HelpScreen

    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#f-lora-r").focus()
        await pilot.pause()
        assert "LoRA rank" in text_of(app, "#cfg-help")
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "LoRA rank" in app.screen._markdown


async def test_vram_estimate_follows_method_length_and_batch(demo_ws):
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        first = text_of(app, "#cfg-vram")
        assert "GiB" in first, first
        await type_into(pilot, app, "#f-training-batch-size", "64")
        await settle(app, pilot)
        bigger = text_of(app, "#cfg-vram")
        assert "GiB" in bigger and bigger != first
        app.screen.query_one("#f-method").value = "full"
        await settle(app, pilot)
        assert text_of(app, "#cfg-vram") != bigger


async def test_load_a_preset_and_a_saved_config(demo_ws):
    cfg = get_preset("tiny-demo")
    cfg.training.lr = 0.0123
    save_config(cfg, demo_ws / "configs" / "other.yaml")
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        source = app.screen.query_one("#cfg-source")
        source.value = "preset:medqa"
        await settle(app, pilot)
        assert "医生" in app.screen.query_one("#f-data-system").value
        assert app.screen.query_one("#f-method").value == "qlora"
        assert app.screen.query_one("#cfg-file").value == ""  # a preset is a new, unnamed file
        assert "data.train" in text_of(app, "#cfg-issues")  # no medqa data in this workspace
        source.value = f"file:{demo_ws / 'configs' / 'other.yaml'}"
        await settle(app, pilot)
        assert app.screen.query_one("#f-training-lr").value == "0.0123"
        assert "training.lr" in text_of(app, "#cfg-diff")


def editor_script(tmp_path: Path, old: str, new: str) -> str:
    script = tmp_path / "fake_editor.py"
    script.write_text(textwrap.dedent(f"""
        import sys, pathlib
        p = pathlib.Path(sys.argv[1])
        p.write_text(p.read_text(encoding="utf-8").replace({old!r}, {new!r}), encoding="utf-8")
    """))
    return f"{sys.executable} {script}"


async def test_editor_round_trip_revalidates(demo_ws, tmp_path, monkeypatch):
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, "  lr: 0.005", "  lr: 0.0007"))
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        assert app.screen.query_one("#f-training-lr").value == "0.0007"
        assert not app.screen.query_one("#cfg-save").disabled
    assert load_config(demo_ws / "configs" / "tiny-demo.yaml").training.lr == 0.0007


async def test_editor_leaving_a_bad_value_shows_it(demo_ws, tmp_path, monkeypatch):
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, "  dropout: 0.0", "  dropout: 1.5"))
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        assert app.screen.query_one("#f-lora-dropout").value == "1.5"
        assert row(app, "lora.dropout").has_class("-invalid")
        assert app.screen.query_one("#cfg-save").disabled
        assert app.screen.load_error and "line" in app.screen.load_error and "lora.dropout" in app.screen.load_error


async def test_keyboard_only_at_80x24(demo_ws):
    """Tab reaches the last field of the scrolling form, and it is scrolled into view."""
    app = make_app(demo_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for _ in range(80):
            if app.focused is not None and app.focused.id == "f-distributed-deepspeed":
                break
            await pilot.press("tab")
        await pilot.pause()
        assert app.focused.id == "f-distributed-deepspeed"
        form = app.screen.query_one("#cfg-form")
        assert form.scroll_y > 0
        assert app.focused.region.y < 24 and app.focused.region.height > 0


async def test_a_bad_file_opens_with_its_error_in_place(demo_ws):
    path = demo_ws / "configs" / "tiny-demo.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("  lr: 0.005", "  lrate: 0.005"), encoding="utf-8")
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        status = text_of(app, "#cfg-status")
        assert "training.lrate" in status and "did you mean 'lr'" in status and "line " in status
        # the rest of the file is in the form, kept as the user wrote it
        assert app.screen.query_one("#f-training-batch-size").value == "16"


# --- issue 12 ------------------------------------------------------------------------------------

async def test_quit_with_unsaved_edits_asks(demo_ws):
    """#3: q with an edit asks: c stays, s saves and quits."""
    from screens.widgets.choice import ChoiceScreen

    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await type_into(pilot, app, "#f-training-lr", "0.003")
        await pilot.press("escape", "q")  # leave the field, then q
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen) and "training.lr" in app.screen.question
        await pilot.press("c")
        await pilot.pause()
        assert app.is_running and app.screen.query_one("#f-training-lr").value == "0.003"
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause()
    assert not app.is_running
    assert load_config(demo_ws / "configs" / "tiny-demo.yaml").training.lr == 0.003


async def test_switching_steps_or_loading_a_preset_with_edits_asks(demo_ws):
    """#3: 2 (Data) and loading a preset ask first; d discards; the preset is a new, unnamed file."""
    from screens.widgets.choice import ChoiceScreen, PathScreen

    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await type_into(pilot, app, "#f-training-lr", "0.003")
        await pilot.press("escape", "2")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("c")
        await pilot.pause()
        assert app.current_mode == "config"
        # Loading a preset over the edits: asked; discard.
        app.screen.query_one("#cfg-source").value = "preset:tiny-demo"
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("d")
        await settle(app, pilot)
        screen = app.screen
        assert screen.query_one("#cfg-file").value == "" and screen.loaded_path is None
        assert screen.query_one("#cfg-source").value == "preset:tiny-demo"
        # Save asks for a path (a free one offered), never the file loaded before.
        await type_into(pilot, app, "#f-training-lr", "0.004")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PathScreen)
        assert app.screen.query_one("#path-input").value == "configs/tiny-demo-2.yaml"
        await pilot.press("enter")
        await settle(app, pilot)
    assert load_config(demo_ws / "configs" / "tiny-demo.yaml").training.lr == 0.005  # untouched
    assert load_config(demo_ws / "configs" / "tiny-demo-2.yaml").training.lr == 0.004


async def test_a_missing_train_file_is_an_error_on_the_field(demo_ws):
    """#4: data.train that does not exist: no "✓ valid", the field says so, Save waits."""
    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await type_into(pilot, app, "#f-data-train", "data/nope.jsonl")
        await settle(app, pilot)
        assert "✓ valid" not in text_of(app, "#cfg-status")
        assert "data.train" in text_of(app, "#cfg-status")
        assert row(app, "data.train").has_class("-invalid")
        assert "does not exist" in str(row(app, "data.train").query_one(".cfg-error").render())
        assert app.screen.query_one("#cfg-save").disabled
        assert "GiB" in text_of(app, "#cfg-vram")  # the estimate still follows the form


async def test_number_fields_checkboxes_and_help_labels(demo_ws):
    """#7 number fields take numbers only; #8 a bool reads [x]/[ ]; #13 F1 names training.lr."""
    from screens.help import HelpScreen

    app = make_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await type_into(pilot, app, "#f-lora-r", "1_6x")
        assert app.screen.query_one("#f-lora-r").value == "16"
        pack = app.screen.query_one("#f-data-pack")
        shown = str(pack.render()).strip()
        assert shown == ("[x]" if pack.value else "[ ]")
        pack.focus()
        await pilot.press("enter")
        assert str(pack.render()).strip() == ("[x]" if pack.value else "[ ]")
        app.screen.query_one("#f-training-lr").focus()
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "This field: training.lr" in app.screen._markdown and "f-training-lr" not in app.screen._markdown


async def test_at_80x24_every_label_and_value_reads_whole(demo_ws):
    """At 80 columns a field's label sits above its value: each label and each one-line value
    (``models/tiny-chat``, the data paths) reads whole in the form, none cut."""
    from test_merge_screen import visible_lines
    from textual.widgets import Input

    app = make_app(demo_ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert row(app, "model").control.value == "models/tiny-chat"
        checked = 0
        for field in screen.fields():
            field.scroll_visible(animate=False, immediate=True)
            await pilot.pause()
            label = field.query_one(".cfg-label")
            assert field.spec.key in "".join(visible_lines(screen, label)), (field.spec.key, visible_lines(screen, label))
            control = field.control
            if isinstance(control, Input) and control.value:
                shown = "".join(visible_lines(screen, control)).strip()
                assert shown == control.value, (field.field_name, shown, control.value)
                checked += 1
        assert checked >= 5


@pytest.mark.parametrize("size", [(100, 32), (120, 36)])
async def test_wide_labels_never_break_mid_word(demo_ws, size):
    """#20 item 14: at 120x36 the label read "gradient_checkpoi" / "nting"; a key is whole on its line,
    or wraps between its words (after an underscore)."""
    from test_merge_screen import visible_lines

    app = make_app(demo_ws)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        screen = app.screen
        for field in screen.fields():
            field.scroll_visible(animate=False, immediate=True)
            await pilot.pause()
            label = field.query_one(".cfg-label")
            lines = [l.strip() for l in visible_lines(screen, label) if l.strip()]
            assert "".join(lines) == field.spec.key, (field.field_name, lines)
            assert all(l.endswith("_") for l in lines[:-1]), (field.field_name, lines)
        checkpointing = row(app, "training.gradient_checkpointing")
        checkpointing.scroll_visible(animate=False, immediate=True)
        await pilot.pause()
        checkpointing = checkpointing.query_one(".cfg-label")
        assert [l.strip() for l in visible_lines(screen, checkpointing) if l.strip()] == ["gradient_", "checkpointing"]


async def test_the_diff_keeps_a_data_files_name_and_extension(demo_ws):
    """#20 item 14: the diff showed "data/chat-transcripts.j…"; a path is cut in the middle, if at all."""
    import shutil

    for name in ("chat-transcripts.jsonl", "MedInfo2019-QA-Medications-train.jsonl"):
        shutil.copy(demo_ws / "data" / "self_cognition.jsonl", demo_ws / "data" / name)
    app = make_app(demo_ws)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        await type_into(pilot, app, "#f-data-train", "data/chat-transcripts.jsonl")
        await settle(app, pilot)
        diff = " ".join(text_of(app, "#cfg-diff").split())
        assert "data.train: data/self_cognition.jsonl → data/chat-transcripts.jsonl" in diff, diff
        await type_into(pilot, app, "#f-data-train", "data/MedInfo2019-QA-Medications-train.jsonl")
        await settle(app, pilot)
        diff = " ".join(text_of(app, "#cfg-diff").split())
        new = diff.split("→ ")[1].split()[0]
        assert new.startswith("data/MedInfo") and "…" in new and new.endswith("-train.jsonl"), diff

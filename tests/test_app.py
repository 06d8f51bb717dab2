"""The app shell and the Environment step, driven with Textual's Pilot."""

from __future__ import annotations

import shutil

import pytest
from conftest import widget_text

from screens.app import TuituneApp
from screens.help import HelpScreen
from screens.steps import screen_class
from tuitune.doctor import GPU, Check, Report
from tuitune.steps import STEPS

FIXED_REPORT = Report(
    checks=[
        Check("python", "ok", "Python 3.11.7"),
        Check("torch", "warn", "torch 2.13.0+cpu is a CPU-only build", "install a CUDA build of torch"),
        Check("cuda", "fail", "no CUDA GPU available: torch is a CPU-only build",
              "run tuitune on the GPU box; check `nvidia-smi`"),
        Check("bitsandbytes", "warn", "bitsandbytes 0.50.2: 4-bit works on CPU only", "QLoRA is slow here"),
        Check("disk", "ok", "80 GiB free"),
    ],
    gpus=[],
)

ONE_GPU = Report(checks=[Check("cuda", "ok", "CUDA 12.4 available, 1 GPU(s)")],
                 gpus=[GPU(0, "NVIDIA RTX 4090", 23.6, 22.0, "8.9")])


def fixed(report):
    return lambda workspace: report


def make_app(root, report=FIXED_REPORT, start=None):
    return TuituneApp(root, start=start, doctor=fixed(report))


def with_model(root, tiny_model):
    shutil.copytree(tiny_model, root / "models" / "tiny-chat")
    return root


async def test_checks_arrive_and_the_selected_fix_shows(workspace):
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        summary = widget_text(app.screen.query_one("#env-summary"))
        assert "1 to fix: cuda" in summary and "2 to look at: torch, bitsandbytes" in summary
        table = app.screen.query_one("#env-checks")
        assert table.row_count == 5
        table.focus()
        await pilot.press("down", "down")
        detail = widget_text(app.screen.query_one("#env-detail"))
        assert "no CUDA GPU" in detail and "what to do: run tuitune on the GPU box" in detail


async def test_a_failing_doctor_is_shown_in_place(workspace):
    def broken(ws):
        raise RuntimeError("child process died")

    app = TuituneApp(workspace, doctor=broken)
    async with app.run_test(size=(100, 32)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        summary = widget_text(app.screen.query_one("#env-summary"))
        assert "could not run: child process died" in summary and "Press r" in summary


async def test_number_keys_and_palette_switch_steps(workspace):
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        for step in STEPS:
            from textual.widgets import Input, TextArea

            if isinstance(app.focused, (Input, TextArea)):  # Chat's prompt box: Esc leaves it first
                await pilot.press("escape")
            await pilot.press(step.number)
            await pilot.pause()
            assert app.current_mode == step.key
            assert f"▶ {step.number} {step.title}" in widget_text(app.screen.query_one("#stepnav"))
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert [f"Go to {s.title}" for s in STEPS] == [t for t in titles if t.startswith("Go to")]


async def test_f1_shows_help_for_the_focused_field(workspace, tiny_model):
    app = make_app(with_model(workspace, tiny_model))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("v")  # the VRAM estimate tab, focus on the model folder
        await pilot.pause()
        assert app.focused.id == "est-model"
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen._markdown
        assert "This field: model" in text and "est-model" not in text and "config.json" in text
        assert "| `r` | Re-check |" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_estimate_updates_as_settings_change(workspace, tiny_model):
    app = make_app(with_model(workspace, tiny_model), report=ONE_GPU)
    async with app.run_test(size=(100, 32)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("v")
        await pilot.pause()
        out = app.screen.query_one("#env-estimate")
        assert app.screen.query_one("#est-model").value == "models/tiny-chat"
        first = widget_text(out)
        assert "total" in first and "fits" in first.lower()
        app.screen.query_one("#est-maxlen").value = "8192"
        await pilot.pause()
        assert widget_text(out) != first
        app.screen.query_one("#est-model").value = "models/nothing-here"
        await pilot.pause()
        assert "config.json" in widget_text(out)



async def test_estimate_form_checkbox_reads_without_colour_and_numbers_take_digits_only(workspace, tiny_model):
    """The VRAM form's gradient-checkpointing box reads ``[x]``/``[ ]`` on screen at 80x24, and
    its max-length and batch fields take digits only (``1_0``, letters and spaces are dropped)."""
    from test_merge_screen import visible_lines

    app = make_app(with_model(workspace, tiny_model), report=ONE_GPU)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("v")
        await pilot.pause()
        screen = app.screen
        box = screen.query_one("#est-ckpt")
        assert visible_lines(screen, box)[0].startswith("[x] gradient checkpointing"), visible_lines(screen, box)
        box.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert box.value is False
        assert visible_lines(screen, box)[0].startswith("[ ] gradient checkpointing"), visible_lines(screen, box)
        for field, typed, kept in (("#est-maxlen", "1_0 x24", "1024"), ("#est-batch", "a2_", "2")):
            w = screen.query_one(field)
            w.focus()
            w.value = ""
            await pilot.press(*typed)
            await pilot.pause()
            assert w.value == kept, (field, w.value)


async def test_q_quits(workspace):
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code in (0, None) and not app.is_running


async def test_palette_offers_each_steps_actions_from_its_bindings(workspace):
    """#17: ctrl+p lists convert, split, generate, save config, load model, send, compare, ... ."""
    from tuitune.steps import step

    app = make_app(workspace, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("Data: Convert the picked file", "Data: Split into train and test",
                       "Data: Generate self-cognition data", "Data: Show tokens", "Config: Save", "Chat: Load",
                       "Chat: Compare", "Chat: Send the message"):
            assert wanted in titles, (wanted, titles)
        # Derived from the screens' own bindings: every described binding of every step is there.
        from textual.binding import Binding

        for s in STEPS:
            for b in screen_class(s).BINDINGS:
                b = b if isinstance(b, Binding) else Binding(*b)
                if b.description and not b.action.startswith(("goto", "help", "quit")) and b.action != "stop":
                    assert f"{s.title}: {b.description}" in titles, (s.key, b.description)
        # Running one from another step opens that step and runs it.
        cmd = next(c for c in app.get_system_commands(app.screen) if c.title == "Config: Check")
        cmd.callback()
        await pilot.pause()
        await pilot.pause()
        assert app.current_mode == "config"
        assert step("config").title == "Config"
        await pilot.press("6")
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert titles[0].startswith("Chat: ")  # this step's actions first
        assert "Chat: Stop" not in titles  # offered only while there is an answer to stop


async def test_q_with_nothing_unsaved_quits_at_once(workspace):
    app = make_app(workspace, start="config")
    async with app.run_test(size=(100, 32)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.screen.set_focus(None)
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running


def footer_labels(screen) -> tuple[list[str], list[str]]:
    """The footer's key labels ("f1 Help"), and those of them not shown whole on ``screen``."""
    from test_merge_screen import visible_lines

    labels, cut = [], []
    for key in screen.query("Footer FooterKey"):
        label = f"{key.key_display} {key.description}".strip()
        labels.append(label)
        shown = " ".join(" ".join(visible_lines(screen, key)).split()) if key.region.width else ""
        # Every cell of the key is on screen and is the key's own (not under the palette key).
        r = key.region
        on_top = all(r.right <= screen.size.width and screen.get_widget_at(x, r.y)[0] is key
                     for x in range(r.x, r.right))
        if label not in shown or not on_top:
            cut.append(f"{label!r} is cut or covered (shows as {shown!r})")
    return labels, cut


@pytest.mark.parametrize("step", [s.key for s in STEPS])
async def test_at_80x24_every_footer_key_label_reads_whole_on_every_step(workspace, tiny_model, step):
    """On every step, with nothing focused and with each focusable widget in turn focused, each
    key label in the footer reads whole at 80 columns (F1 and q included), never cut."""
    from textual.widgets import Input, TextArea

    with_model(workspace, tiny_model)
    if step == "train":  # a run to select: Merge and Chat join the footer
        from test_train_screen import make_run

        make_run(workspace)
    app = make_app(workspace, start=step)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.pause(0.2)
        screen = app.screen
        if step == "train":
            for _ in range(100):
                if "m Merge" in footer_labels(screen)[0]:
                    break
                await pilot.pause(0.05)
            assert "m Merge" in footer_labels(screen)[0]
        states = [None, *[w for w in screen.focus_chain]]
        for widget in states:
            screen.set_focus(widget)
            await pilot.pause()
            for _ in range(250):  # the footer is rebuilt and repainted after a focus change (later under load)
                labels, cut = footer_labels(screen)
                if "f1 Help" in labels and not cut:
                    break
                await pilot.pause(0.04)
            where = f"{step}, focus on {widget!r}"
            assert not cut, (where, cut)
            assert "f1 Help" in labels, (where, labels)
            # q types a letter in a text field, so the footer shows it only elsewhere.
            typing = isinstance(widget, (Input, TextArea))
            assert typing or "q Quit" in labels, (where, labels)
        if step == "chat":  # while an answer is written, Stop (esc) joins the footer
            screen.set_focus(None)
            screen.generating = True
            screen.refresh_bindings()
            await pilot.pause()
            labels, cut = footer_labels(screen)
            assert "esc Stop" in labels and not cut, (labels, cut)
            screen.generating = False


@pytest.mark.parametrize("step", [s.key for s in STEPS])
async def test_no_step_puts_the_cursor_in_a_text_field_so_number_keys_and_q_work(workspace, step):
    """#20 item 13: arriving on a step, and coming back to it from the command palette, no text field
    has the cursor (the number keys would type into it and q leave the footer); the next step's key
    switches."""
    from textual.widgets import Input, TextArea

    app = make_app(workspace, start=step)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for when in ("on arrival", "after the palette"):
            assert not isinstance(app.focused, (Input, TextArea)), (step, when, app.focused)
            shown = {b.key for (_, b, enabled, _) in app.screen.active_bindings.values() if b.show and enabled}
            assert "q" in shown, (step, when, shown)
            await pilot.press("escape", "ctrl+p")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
        other = next(s for s in STEPS if s.key != step)
        await pilot.press(other.number)
        await pilot.pause()
        assert app.current_mode == other.key

"""Snapshots of the Chat step: compare mode (base vs adapter, seeded) and one model with its settings.

The models sit at fixed paths in ``fixed_workspace``; the adapter is built from a fixed
seed and names its base relatively; sampling is seeded, and timings are hidden
(``app.chat_timings = False``), so every run draws the same screen.
"""

from __future__ import annotations

from test_chat_screen import chat_workspace, load, make_app, set_field, until


def answered(prompt: str, compare_with: str | None = None, **fields):
    async def run_before(pilot):
        screen = pilot.app.screen
        await load(pilot, compare_with=compare_with)
        for name, value in {"max-new-tokens": "24", **fields}.items():
            set_field(screen, name, value)
        await pilot.pause()
        prompt_box = screen.query_one("#chat-input")
        prompt_box.cursor_blink = False  # a blinking cursor would be caught on or off at random
        prompt_box.focus()
        await screen.send(prompt)
        await until(pilot, lambda: not screen.generating and all(s.last for s in screen.sessions), "the answers")
        await pilot.pause()
        await pilot.pause()

    return run_before


def test_compare_base_and_adapter_100x32(snap_compare, fixed_workspace, tiny_model):
    ws = chat_workspace(fixed_workspace, tiny_model, adapter=True)
    app = make_app(ws, chat_timings=False)
    assert snap_compare(app, terminal_size=(100, 32),
                        run_before=answered("请介绍一下你自己", compare_with="models/tiny-lora"))


def test_single_model_with_settings_100x32(snap_compare, fixed_workspace, tiny_model):
    ws = chat_workspace(fixed_workspace, tiny_model)
    app = make_app(ws, chat_timings=False)
    assert snap_compare(app, terminal_size=(100, 32),
                        run_before=answered("What is LoRA?", **{"top-k": "0", "system": "Be brief."}))


def test_compare_80x24(snap_compare, fixed_workspace, tiny_model):
    ws = chat_workspace(fixed_workspace, tiny_model, adapter=True)
    app = make_app(ws, chat_timings=False)
    assert snap_compare(app, terminal_size=(80, 24),
                        run_before=answered("hello", compare_with="models/tiny-lora", temperature="0"))


def load_error(spec: str):
    async def run_before(pilot):
        screen = pilot.app.screen
        screen.query_one("#chat-model").value = spec
        await pilot.press("ctrl+l")
        await until(pilot, lambda: "Could not load" in str(screen.query_one("#chat-status").render())
                    and not screen.loading_models, "the load error")
        await pilot.pause()

    return run_before


def test_load_error_wraps_80x24(snap_compare, fixed_workspace, tiny_model):
    """Issue 20 #14: the load error was cut after three lines ("…; give a"); it wraps whole."""
    ws = chat_workspace(fixed_workspace, tiny_model)
    assert snap_compare(make_app(ws), terminal_size=(80, 24), run_before=load_error("models/smol"))


def test_load_error_wraps_120x36(snap_compare, fixed_workspace, tiny_model):
    ws = chat_workspace(fixed_workspace, tiny_model)
    assert snap_compare(make_app(ws), terminal_size=(120, 36), run_before=load_error("models/smol"))

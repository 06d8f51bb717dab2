"""The Chat step in the TUI (Pilot, real tiny model): load, stream, stop, reset, save, compare, handover."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from test_chat import make_adapter

from tuitune.chat import ChatSession
from tuitune.doctor import Report

SIZE = (100, 32)


def chat_workspace(root: Path, tiny_model: Path, adapter: bool = False) -> Path:
    """A workspace with models/tiny-chat and (optionally) models/tiny-lora, an adapter on it."""
    import shutil

    from tuitune.workspace import Workspace

    ws = Workspace.at(root).ensure()
    shutil.copytree(tiny_model, ws.models / "tiny-chat")
    if adapter:
        out = make_adapter(ws.models / "tiny-chat", ws.models / "tiny-lora")
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = "models/tiny-chat"  # relative: the same on every machine
        (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return ws.root


def make_app(ws: Path, **attrs):
    from screens.app import TuituneApp

    app = TuituneApp(ws, start="chat", doctor=lambda ws: Report())
    for k, v in attrs.items():
        setattr(app, k, v)
    return app


async def until(pilot, cond, what: str, timeout: float = 120.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        await pilot.pause(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status(app) -> str:
    return str(app.screen.query_one("#chat-status").render())


async def load(pilot, *, compare_with: str | None = None):
    screen = pilot.app.screen
    if compare_with:
        await pilot.press("ctrl+t")
        screen.query_one("#chat-model-b").value = compare_with
    await pilot.press("ctrl+l")
    await until(pilot, lambda: screen.sessions and not screen.loading_models, "the model to load")


def set_field(screen, name: str, value: str) -> None:
    screen.query_one(f"#chat-set-{name}").value = value


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    return chat_workspace(tmp_path / "ws", tiny_model)


async def test_prompt_streams_tokens_into_the_transcript(ws):
    seen: list = []
    app = make_app(ws)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        screen = app.screen
        assert screen.query_one("#chat-model").value == "models/tiny-chat"
        await load(pilot)
        assert "tiny-chat · template auto · cpu float32" in status(app)
        set_field(screen, "max-new-tokens", "400")
        set_field(screen, "top-k", "0")
        await pilot.pause()
        assert screen.settings.max_new_tokens == 400 and screen.settings.top_k == 0
        screen.query_one("#chat-input").focus()
        await pilot.press(*"hello", "ctrl+j", *"there")
        assert screen.query_one("#chat-input").text == "hello\nthere"
        await pilot.press("enter")
        assert screen.query_one("#chat-input").text == ""
        column = screen.query_one("#chat-a")
        block = await until(pilot, lambda: column.answers and column.answers[0], "an answer block")
        await until(pilot, lambda: not screen.generating, "the answer to finish")
        await pilot.pause()
        # Tokens arrived while the answer was still being written: several Piece messages reached
        # the columns before the answer-done one (seen in the order they were handled).
        pieces = [m for m in seen if type(m).__name__ == "_Piece"]
        done = [i for i, m in enumerate(seen) if type(m).__name__ == "_Done"]
        assert len(pieces) >= 2 and seen.index(pieces[1]) < done[0]
        session = screen.sessions[0]
        assert block.text == session.last.text and session.last.stats.new_tokens <= 400
        stats = str(block.query_one(".chat-stats").render())
        assert "tokens" in stats and "tok/s" in stats and "seed 0" in stats
        # The same answer the engine gives with the same settings and seed.
        fresh = ChatSession(screen.settings).load(str(ws / "models" / "tiny-chat"))
        assert fresh.ask("hello\nthere") == block.text
        users = column.query(".chat-user")
        assert "hello\nthere" in str(users[0].render())


async def test_escape_stops_the_answer(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await load(pilot)
        set_field(screen, "max-new-tokens", "100000")
        await pilot.pause()
        screen.query_one("#chat-input").focus()
        await pilot.press(*"hi", "enter")
        column = screen.query_one("#chat-a")
        await until(pilot, lambda: column.answers and column.answers[0].text, "the first tokens")
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating, "the answer to stop")
        await pilot.pause()
        assert screen.sessions[0].last.stats.finish == "stopped"
        assert "stopped" in str(column.answers[0].query_one(".chat-stats").render())
        # Esc with nothing to stop leaves the field, as everywhere else.
        screen.query_one("#chat-input").focus()
        await pilot.press("escape")
        assert app.focused is None


async def test_save_and_reset(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await load(pilot)
        set_field(screen, "max-new-tokens", "12")
        set_field(screen, "top-k", "0")
        set_field(screen, "temperature", "1")
        set_field(screen, "system", "You are Alice.")
        await pilot.pause()
        screen.query_one("#chat-input").focus()
        await pilot.press(*"who are you", "enter")
        await until(pilot, lambda: screen.sessions[0].last and not screen.generating, "the answer")
        await pilot.press("ctrl+s")
        saved = ws / "data" / "chat-transcripts.jsonl"
        rec = json.loads(saved.read_text(encoding="utf-8"))
        assert rec["conversation"][0]["system"] == "You are Alice."
        assert rec["conversation"][0]["input"] == "who are you"
        assert "Saved 1 conversation to data/chat-transcripts.jsonl" in status(app)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert screen.sessions[0].history == []
        assert not screen.query_one("#chat-a").answers
        await pilot.press("ctrl+s")
        assert "Not saved: nothing to save yet" in status(app)


async def test_bad_settings_and_bad_model_are_shown_in_place(ws):
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        set_field(screen, "temperature", "-1")
        await pilot.pause()
        assert "temperature must be 0 or more" in str(screen.query_one("#chat-settings-error").render())
        assert screen.settings.temperature == 0.7  # the last good value stays
        field = screen.query_one("#chat-model")
        field.value = "models/nope"
        field.focus()
        await pilot.press("enter")
        await until(pilot, lambda: "Could not load" in status(app), "the error")
        assert "models/nope: no such folder" in status(app)
        assert field.value == "models/nope" and not screen.loading_models
        screen.query_one("#chat-input").focus()
        await pilot.press(*"hi", "enter")
        assert "Load a model first" in status(app)
        assert screen.query_one("#chat-input").text == "hi"  # the user's text is kept


async def test_handover_from_merge_loads_the_model(ws):
    app = make_app(ws, selected_model=str(ws / "models" / "tiny-chat"))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert screen.query_one("#chat-model").value == str(ws / "models" / "tiny-chat")
        await until(pilot, lambda: screen.sessions and not screen.loading_models, "the handed-over model")
        assert screen.sessions[0].source.label == "tiny-chat"


async def test_compare_mode_answers_side_by_side(tmp_path, tiny_model):
    ws = chat_workspace(tmp_path / "ws", tiny_model, adapter=True)
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await load(pilot, compare_with="models/tiny-lora")
        a, b = screen.sessions
        assert a.loaded is b.loaded  # one base in memory
        assert b.source.label == "tiny-chat + tiny-lora"
        set_field(screen, "max-new-tokens", "16")
        await pilot.pause()
        screen.query_one("#chat-input").focus()
        await pilot.press(*"hi", "enter")
        await until(pilot, lambda: b.last and not screen.generating, "both answers")
        await pilot.pause()
        col_a, col_b = screen.query_one("#chat-a"), screen.query_one("#chat-b")
        assert col_a.answers[0].text == a.last.text and col_b.answers[0].text == b.last.text
        assert a.last.stats.seed == b.last.stats.seed == 0
        assert a.last.text != b.last.text
        # Compare off: the second model is dropped, the first stays.
        await pilot.press("ctrl+t")
        assert len(screen.sessions) == 1 and not screen.query_one("#chat-col-b").display


async def test_template_for_a_model_without_one(tmp_path, tiny_model):
    from test_chat import no_template_model

    ws = chat_workspace(tmp_path / "ws", tiny_model)
    no_template_model(tiny_model, ws / "models" / "plain")
    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#chat-model").value = "models/plain"
        await pilot.press("ctrl+l")
        await until(pilot, lambda: "Could not load" in status(app), "the error")
        assert "no chat template" in status(app) and "chatml" in status(app)
        screen.query_one("#chat-template").value = "chatml"
        await pilot.pause()
        await pilot.press("ctrl+l")
        await until(pilot, lambda: screen.sessions and not screen.loading_models, "the model")
        assert screen.sessions[0].template == "chatml" and "template chatml" in status(app)
        # Switching templates on a loaded model needs no reload; a bad choice is refused in place.
        screen.query_one("#chat-template").value = "__default__"
        await pilot.pause()
        assert "Template not changed" in status(app) and screen.sessions[0].template == "chatml"


async def test_a_failed_load_keeps_the_model_and_the_focus(ws):
    """Issue 12 #5: /nope/model fails; tiny-chat stays loaded, focus stays on the model field."""
    from screens.help import help_markdown

    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await load(pilot)
        before = screen.sessions[0]
        field = screen.query_one("#chat-model")
        field.focus()
        await pilot.pause()
        field.value = ""
        await pilot.press(*"/nope/model", "enter")
        await until(pilot, lambda: "Could not load" in status(app), "the error")
        await until(pilot, lambda: not screen.loading_models, "the load to end")
        await pilot.pause()
        assert app.focused is field
        assert "/nope/model: no such folder" in status(app) and "still loaded: tiny-chat" in status(app)
        assert field.has_class("-load-failed")
        assert screen.sessions == [before] and before.loaded is not None
        assert "This field: model" in help_markdown(screen, app.focused)
        # The old model still answers.
        set_field(screen, "max-new-tokens", "4")
        screen.query_one("#chat-input").focus()
        await pilot.press(*"hi", "enter")
        await until(pilot, lambda: before.last and not screen.generating, "the answer")
        assert screen.query_one("#chat-a").answers


async def test_at_80x24_compare_titles_show_the_model_names_whole(tmp_path, tiny_model):
    """Each compare pane's title reads its model's name whole at 80 columns, a long one wrapped
    (they showed only "A:" and "B:", the name pushed below the title's one line)."""
    from test_merge_screen import assert_shown_whole

    ws = chat_workspace(tmp_path / "ws", tiny_model, adapter=True)
    long = "medqa-qwen2.5-7b-lora-r64-lr2e-4-try3"  # a name wider than a pane
    (ws / "models" / "tiny-lora").rename(ws / "models" / long)
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await load(pilot, compare_with=f"models/{long}")
        await pilot.pause()
        assert long in screen.sessions[1].source.label
        for side, session in zip("ab", screen.sessions):
            title = screen.query_one(f"#chat-title-{side}")
            assert_shown_whole(screen, title, f"{side.upper()}: {session.source.label}")


def footer_keys(app) -> dict[str, str]:
    """What the footer shows: key as displayed → description."""
    return {k.key_display: k.description for k in app.screen.query("FooterKey")}


async def test_arriving_on_chat_leaves_the_number_keys_to_the_steps(ws):
    """Issue 20 #13: Chat put the cursor in its message box on arrival, so 7 typed "7" there instead
    of opening Evaluate, and q left the footer. Now nothing has the focus (Tab goes to the model
    field); i (or Enter) goes to the message box, and the footer says so."""
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert app.focused is None
        keys = footer_keys(app)
        assert keys.get("q") == "Quit" and keys.get("i") == "Message", keys
        await pilot.press("i")
        assert app.focused is screen.query_one("#chat-input")
        await pilot.press("escape", "enter")  # Enter outside a field goes to the box too
        assert app.focused is screen.query_one("#chat-input") and screen.query_one("#chat-input").text == ""
        await pilot.press("escape", "7")
        await pilot.pause()
        assert app.current_mode == "eval" and type(app.screen).__name__ == "EvalScreen"
        assert screen.query_one("#chat-input").text == ""
        await pilot.press("6")  # back: still not in a text field
        await pilot.pause()
        assert app.screen is screen and app.focused is None
        assert footer_keys(app).get("q") == "Quit"
        await pilot.press("tab")
        assert app.focused is screen.query_one("#chat-model")


async def test_a_handed_over_model_loads_without_taking_the_focus(ws):
    """A model handed over from Merge loads on arrival; the cursor stays out of the text fields."""
    app = make_app(ws, selected_model="models/tiny-chat")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.sessions and not screen.loading_models, "the handed-over model")
        await pilot.pause()
        assert app.focused is None
        await pilot.press("7")
        await pilot.pause()
        assert app.current_mode == "eval"


def pieces_and_ends(seen: list) -> list[tuple[str, int]]:
    """The order in which the columns handled streamed pieces and answer ends: ("piece"|"done", side)."""
    kinds = {"_Piece": "piece", "_Done": "done"}
    return [(kinds[type(m).__name__], m.side) for m in seen if type(m).__name__ in kinds]


async def test_compare_sides_answer_together_and_esc_stops_both(tmp_path, tiny_model):
    """Issue 20 #8: compare ran the sides one after the other (B waited for all of A) and Esc
    stopped A while B never answered. Both now stream before either ends; Esc stops both where
    they are, each keeps its text and says it was stopped."""
    ws = chat_workspace(tmp_path / "ws", tiny_model, adapter=True)
    seen: list = []
    app = make_app(ws)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        screen = app.screen
        await load(pilot, compare_with="models/tiny-lora")
        set_field(screen, "max-new-tokens", "100000")  # neither ends by itself
        set_field(screen, "temperature", "0")
        await pilot.pause()
        await pilot.press("i", *"hi", "enter")
        col_a, col_b = screen.query_one("#chat-a"), screen.query_one("#chat-b")
        await until(pilot, lambda: col_a.answers and col_b.answers and col_a.answers[0].text
                    and col_b.answers[0].text, "both sides' first tokens", timeout=60)
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating, "both answers to stop")
        await pilot.pause()
        order = pieces_and_ends(seen)
        first_end = next(i for i, (kind, _) in enumerate(order) if kind == "done")
        assert ("piece", 0) in order[:first_end] and ("piece", 1) in order[:first_end], order
        for col, session in ((col_a, screen.sessions[0]), (col_b, screen.sessions[1])):
            block = col.answers[0]
            assert session.last.stats.finish == "stopped"
            assert block.text and block.text == session.last.text  # the partial answer stays
            assert "stopped" in str(block.query_one(".chat-stats").render())
        assert "Stopped." in status(app)


async def test_keys_typed_in_a_burst_reach_the_box_in_order(ws):
    """"hi⏎" arriving at once (a quick typist over SSH, tmux send-keys) sent an empty message and
    left "hi" in the box: Enter ran as a priority binding before the letters reached the box."""
    from textual import events

    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await pilot.press("i")
        burst = [("a", "a"), ("b", "b"), ("ctrl+j", "\n"), ("c", "c"), ("enter", "\r")]
        for key, char in burst:  # posted back to back, as the driver does with one read
            app.post_message(events.Key(key, char))
        await until(pilot, lambda: "Load a model first" in status(app), "the message to be sent")
        assert screen.query_one("#chat-input").text == "ab\nc"  # kept, as no model is loaded

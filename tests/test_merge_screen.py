"""The Merge step driven with Pilot: pick a run, merge it for real, see the verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import widget_text
from merge_helpers import make_adapter

from screens.app import TuituneApp
from tuitune.steps import STEPS
from tuitune.doctor import Report

RUN = "20261123-150102-quick"
OLDER = "20261123-120000-first"


def fake_run(ws: Path, run_id: str, created: float, adapter_from: Path | None = None, checkpoints=(),
             status="finished") -> Path:
    """A run folder as training leaves it; the adapter is real (peft) when ``adapter_from`` is given."""
    run = ws / "runs" / run_id
    run.mkdir(parents=True)
    (run / "state.json").write_text(json.dumps({"status": status, "created": created, "step": 3}))
    (run / "config.yaml").write_text("model: models/tiny-chat\nmethod: lora\n"
                                     "data:\n  train: data/self_cognition.jsonl\n")
    targets = [run / "adapter"] + [run / "checkpoints" / f"checkpoint-{n}" for n in checkpoints]
    for t in targets:
        if adapter_from is not None:
            make_adapter(adapter_from, t, r=2)
        else:
            t.mkdir(parents=True)
            (t / "adapter_config.json").write_text('{"peft_type": "LORA"}')
        if t.parent.name == "checkpoints":
            (t / "trainer_state.json").write_text("{}")
    return run


def workspace_with_runs(ws: Path, tiny_model: Path | None = None) -> Path:
    if tiny_model is not None:
        shutil.copytree(tiny_model, ws / "models" / "tiny-chat")
    src = ws / "models" / "tiny-chat" if tiny_model is not None else None
    fake_run(ws, OLDER, 1_700_000_000.0, None, checkpoints=(10,))
    fake_run(ws, RUN, 1_700_010_000.0, src, checkpoints=(2,))
    return ws


def make_app(ws: Path) -> TuituneApp:
    return TuituneApp(ws, start="merge", doctor=lambda w: Report())


async def test_lists_adapters_and_follows_the_selection(workspace):
    app = make_app(workspace_with_runs(workspace))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#merge-sources")
        assert list(table.rows_by_key) == [f"{RUN}::final", f"{RUN}::2", f"{OLDER}::final", f"{OLDER}::10"]
        out = app.screen.query_one("#merge-out")
        assert out.value == f"models/{RUN}-merged"
        table.focus()
        await pilot.press("down")
        assert out.value == f"models/{RUN}-step2-merged"
        # A folder the user typed is kept when the selection moves.
        out.value = "models/mine"
        await pilot.press("down")
        assert out.value == "models/mine"


async def test_a_run_handed_over_from_train_is_preselected(workspace):
    app = make_app(workspace_with_runs(workspace))
    app.selected_run = OLDER
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#merge-sources").current_key() == f"{OLDER}::final"
        assert app.screen.query_one("#merge-out").value == f"models/{OLDER}-merged"


async def test_merge_from_the_screen_shows_progress_and_verification(workspace, tiny_model):
    app = make_app(workspace_with_runs(workspace, tiny_model))
    progress = []

    def hook(message):
        if type(message).__name__ == "Progress":
            progress.append((message.done, message.total))

    async with app.run_test(size=(100, 32), message_hook=hook) as pilot:
        await pilot.pause()
        await pilot.press("m")
        await app.workers.wait_for_complete()
        await pilot.pause()
        result = widget_text(app.screen.query_one("#merge-result"))
        assert "verification passed" in result and f"models/{RUN}-merged" in result, result
        assert progress and progress[-1][0] == progress[-1][1]
        bar = app.screen.query_one("#merge-progress")
        assert bar.progress == bar.total == progress[-1][1]
        assert (workspace / "models" / f"{RUN}-merged" / "config.json").exists()
        # o hands the merged model to Chat (the key is there once the Chat step exists).
        if "chat" in {s.key for s in STEPS}:
            await pilot.press("o")
            await pilot.pause()
            assert app.current_mode == "chat"
            app.switch_mode("merge")
            await pilot.pause()
        else:
            app.screen.action_open_in("chat")
        assert app.selected_model == str(workspace / "models" / f"{RUN}-merged")
        # Merging again into the same folder asks first: overwrite / new name / cancel.
        out = workspace / "models" / f"{RUN}-merged"
        await pilot.press("m")
        await pilot.pause()
        assert type(app.screen).__name__ == "ChoiceScreen"
        question = widget_text(app.screen.query_one(".choice-text"))
        assert f"models/{RUN}-merged" in question and f"models/{RUN}-merged-2" in question
        await pilot.press("escape")  # cancel: nothing happens to the folder
        await pilot.pause()
        assert type(app.screen).__name__ == "MergeScreen"
        assert "not merged" in widget_text(app.screen.query_one("#merge-status"))
        assert sorted(p.name for p in out.parent.iterdir()) == [f"{RUN}-merged", "tiny-chat"]
        # New name: the bumped folder is written and the field says so.
        await pilot.press("m")
        await pilot.pause()
        await pilot.press("n")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen.query_one("#merge-out").value == f"models/{RUN}-merged-2"
        assert (out.parent / f"{RUN}-merged-2" / "config.json").exists()
        assert f"models/{RUN}-merged-2" in widget_text(app.screen.query_one("#merge-result"))
        # Overwrite: the merge replaces the folder, whose old files are moved aside (never deleted).
        app.screen.query_one("#merge-out").value = f"models/{RUN}-merged"
        await pilot.press("m")
        await pilot.pause()
        await pilot.press("o")
        await app.workers.wait_for_complete()
        await pilot.pause()
        result = widget_text(app.screen.query_one("#merge-result"))
        assert "verification passed" in result and "is now" in result, result
        assert (out / "config.json").exists()
        assert any(p.name.startswith(f"{RUN}-merged.replaced-") for p in out.parent.iterdir())


def visible_lines(screen, widget) -> list[str]:
    """The lines ``widget`` shows on ``screen``, as plain text, after clipping by its containers."""
    geo = screen.find_widget(widget)
    region = geo.region.intersection(geo.clip)
    strips = widget.render_lines(region.reset_offset.translate((region.x - geo.region.x, region.y - geo.region.y)))
    return [strip.text.rstrip() for strip in strips]


def assert_shown_whole(screen, widget, message: str | None = None) -> str:
    """Every character of ``message`` (default: the widget's whole content) is on screen in
    ``widget``: wrapped, never cut or clipped. Returns the message."""
    if message is None:
        message = widget_text(widget, width=10_000).strip()
    shown = "".join("".join(visible_lines(screen, widget)).split())
    assert "".join(message.split()) in shown, (message, visible_lines(screen, widget))
    return message


async def test_a_long_merge_error_wraps_whole_at_80_columns(workspace):
    ws = workspace_with_runs(workspace)
    app = make_app(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("m")  # the fake run's adapter has no base model: a long one-line error
        await app.workers.wait_for_complete()
        await pilot.pause()
        message = assert_shown_whole(app.screen, app.screen.query_one("#merge-status"))
        assert message.startswith("error:") and len(message) > 2 * 80, message
        # The fix names the shell command (the screen has no base field), not a bare flag.
        assert message.rstrip().endswith("merge from a shell with `tuitune merge RUN --base DIR`"), message


async def test_at_80x24_a_long_run_name_wraps_in_the_adapters_table(workspace):
    name = "medqa-qwen2.5-7b-lora-r64-lr2e-4-maxlen2048-try3"
    fake_run(workspace, name, 1_700_000_000.0, None, checkpoints=(100,))
    app = make_app(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = visible_lines(app.screen, app.screen.query_one("#merge-sources"))
        assert name in "".join("".join(line.split()[:1]) for line in lines[1:4]), lines
        assert any("checkpoint 100" in line for line in lines), lines


async def test_verify_reads_without_colour_and_errors_name_the_fields_not_flags(workspace, tiny_model):
    """The verify box reads ``[x] verify`` / ``[ ] verify`` at 80x24; a bad max shard size is
    "max shard 'abc': ..." and a merge without verification says "skipped (verify off)": no
    ``--max-shard-size`` or ``--no-verify`` on the screen."""
    app = make_app(workspace_with_runs(workspace, tiny_model))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        box = screen.query_one("#merge-verify")
        assert visible_lines(screen, box)[0].startswith("[x] verify"), visible_lines(screen, box)
        screen.query_one("#merge-shard").value = "abc"
        await pilot.press("m")
        await app.workers.wait_for_complete()
        await pilot.pause()
        message = assert_shown_whole(screen, screen.query_one("#merge-status"))
        assert "max shard 'abc'" in message and "--" not in message, message
        screen.query_one("#merge-shard").value = "2GB"
        box.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert box.value is False
        assert visible_lines(screen, box)[0].startswith("[ ] verify"), visible_lines(screen, box)
        screen.set_focus(None)
        await pilot.press("m")
        await app.workers.wait_for_complete()
        await pilot.pause()
        result = widget_text(screen.query_one("#merge-result"))
        assert "verification skipped (verify off)" in result and "--" not in result, result


async def test_export_from_the_screen_merges_then_says_why_the_converter_refuses(workspace, tiny_model):
    """e: the Export dialog (format, type, output); the adapter is merged first, then llama.cpp's
    converter refuses the tiny model's tokenizer, and the screen says so in one line."""
    from screens.widgets.merge.export_panel import ExportModal

    app = make_app(workspace_with_runs(workspace, tiny_model))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, ExportModal)
        assert modal.query_one("#export-out").value == f"models/{RUN}-f16.gguf"
        modal.query_one("#export-type").value = "q8_0"
        await pilot.pause()
        assert modal.query_one("#export-out").value == f"models/{RUN}-q8_0.gguf"   # follows the type
        modal.query_one("#export-go").press()
        for _ in range(600):
            await pilot.pause(0.1)
            status = widget_text(app.screen.query_one("#merge-status"))
            if status.startswith("error:"):
                break
        assert status.startswith(f"error: {RUN} (merged): llama.cpp's converter cannot convert this model"), status
        assert not (workspace / "models" / f"{RUN}-q8_0.gguf").exists()
        assert not list((workspace / "models").glob(".*partial*"))


async def test_export_is_shown_in_the_footer_and_after_a_merge(workspace):
    """e Export sits in the footer beside the other keys, q included, within 80 columns; after a merge
    the result names it before Chat, and e offers the merged model (#20 item 4)."""
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    from screens.widgets.merge.export_panel import ExportModal
    from tuitune.merge import MergeResult, Verification

    app = make_app(workspace_with_runs(workspace))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        keys = {k.key: k for k in app.screen.query_one(Footer).query(FooterKey)}
        for key, label in (("m", "Merge"), ("e", "Export"), ("o", "Open in Chat"), ("q", "Quit")):
            assert keys[key].description == label, (key, keys[key].description)
        assert all(k.region.width and k.region.right <= 80 for k in keys.values()), \
            {k: (v.region.x, v.region.right) for k, v in keys.items()}
        out = workspace / "models" / f"{RUN}-merged"
        screen = app.screen
        screen.post_message(screen.Done(MergeResult(
            out=out, shards=1, tensors=26, bytes=2_497_536, dtype="fp32", streamed=True, fallback=None,
            untied=False, seconds=1.0, verification=Verification(ok=True, max_abs_diff=1e-6, tolerance=1e-4,
                                                                 top1_agree=1.0, prompts=3, dtype="fp32"))))
        await pilot.pause()
        result = widget_text(screen.query_one("#merge-result"), width=80)
        assert "press e: Export (GGUF, Ollama) · o: Open in Chat" in result, result
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ExportModal)
        assert app.screen.query_one("#export-out").value == f"models/{RUN}-merged-f16.gguf"

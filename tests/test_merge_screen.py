"""The Merge step driven with Pilot: pick a run, merge it for real, see the verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import widget_text
from merge_helpers import make_adapter

from screens.app import TuituneApp
from screens.steps import STEPS
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
            app.screen.action_open_chat()
        assert app.selected_model == str(workspace / "models" / f"{RUN}-merged")
        # Merging again into the same folder is refused in place; the form keeps its values.
        await pilot.press("m")
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = widget_text(app.screen.query_one("#merge-status"))
        assert "error:" in status and "not empty" in status
        assert app.screen.query_one("#merge-out").value == f"models/{RUN}-merged"


async def test_an_empty_workspace_says_what_to_do(workspace):
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        assert "train a LoRA run" in widget_text(app.screen.query_one("#merge-status"))
        await pilot.press("m")
        assert "Pick an adapter first" in widget_text(app.screen.query_one("#merge-status"))

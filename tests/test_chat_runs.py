"""Chat with a real run: its adapter, its checkpoints (also while it has no final adapter), its base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from test_chat import QUESTION
from train_helpers import make_workspace, write_config

from tuitune.chat import ChatSession, GenerationSettings, load_pair
from tuitune.errors import TuituneError
from tuitune.sources import resolve

pytestmark = pytest.mark.slow
RUN = "chat-run"
PROMPTS = ["Who are you?", "What can you do?"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model) -> Path:
    """A workspace with one finished 4-step LoRA run that saved checkpoints 1 to 4 and logged its
    answers to PROMPTS at steps 0, 2 and 4 (with its own system prompt and token budget). One run
    for every test here (each was a training process of its own)."""
    ws = make_workspace(tmp_path_factory.mktemp("chatruns") / "ws", tiny_model)
    cfg = write_config(ws, "quick", **{"training.max_steps": 4, "training.save_steps": 1, "evaluation.every": 2,
                                       "training.lr": 0.02, "evaluation.prompts": PROMPTS,
                                       "evaluation.max_new_tokens": 10, "data.system": "You are Tiny."})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", RUN, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ws


def test_run_forms(ws):
    run = ws / "runs" / RUN
    base = str((ws / "models" / "tiny-chat").resolve())
    src = resolve(RUN, ws)
    assert src.adapter == run / "adapter" and src.base == base and src.label == RUN and src.template == "auto"
    cp = resolve(f"{RUN}:checkpoint-2", ws)
    assert cp.adapter == run / "checkpoints" / "checkpoint-2" and cp.label == f"{RUN}:checkpoint-2"
    assert resolve(f"{RUN}:2", ws).adapter == cp.adapter
    assert resolve(RUN, ws, checkpoint=2).adapter == cp.adapter
    assert resolve(str(run / "checkpoints" / "checkpoint-2")).adapter == cp.adapter
    assert resolve(str(run), ws).adapter == run / "adapter"
    b = resolve(f"{RUN}:base", ws)
    assert b.adapter is None and b.base == base
    with pytest.raises(TuituneError, match="no complete checkpoint-9; checkpoints: checkpoint-1, checkpoint-2"):
        resolve(f"{RUN}:checkpoint-9", ws)


def test_a_run_still_training_uses_its_latest_checkpoint(ws, tmp_path):
    """No final adapter yet (as while training): the newest complete checkpoint, and a note."""
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, symlinks=True)
    run = copy / "runs" / RUN
    shutil.rmtree(run / "adapter")
    (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()  # a save still being written
    src = resolve(RUN, copy)
    assert src.adapter == run / "checkpoints" / "checkpoint-3"
    assert "no final adapter yet" in src.notes[0] and "checkpoint-3" in src.notes[0]


def test_compare_two_checkpoints_on_one_base(ws):
    settings = GenerationSettings(temperature=0.8, seed=5, max_new_tokens=16)
    a, b = load_pair(resolve(f"{RUN}:checkpoint-1", ws), resolve(f"{RUN}:checkpoint-3", ws),
                     settings=settings)
    ans_a, ans_b = a.ask(QUESTION), b.ask(QUESTION)
    for spec, ans in ((f"{RUN}:checkpoint-1", ans_a), (f"{RUN}:checkpoint-3", ans_b)):
        assert ChatSession(settings).load(spec, workspace=ws).ask(QUESTION) == ans, spec
    assert b.source.label == f"{RUN}:checkpoint-3"
    # The run trains embed_tokens and lm_head whole (modules_to_save): peft's load_adapter gets a
    # second such adapter wrong on a shared base, so each checkpoint has its own copy of the base.
    assert a.loaded is not b.loaded


def test_lora_only_checkpoints_share_one_base(ws, tmp_path):
    """Adapters without whole modules sit on one base, and each answers as it does alone."""
    run = tmp_path / "ws"
    shutil.copytree(ws, run)
    for n in (1, 3):
        cfg = run / "runs" / RUN / "checkpoints" / f"checkpoint-{n}" / "adapter_config.json"
        data = json.loads(cfg.read_text())
        data["modules_to_save"] = None
        cfg.write_text(json.dumps(data))
        from safetensors.torch import load_file, save_file

        weights = cfg.parent / "adapter_model.safetensors"
        save_file({k: v for k, v in load_file(weights).items() if "lora_" in k}, weights)
    settings = GenerationSettings(temperature=0, max_new_tokens=12)
    a, b = load_pair(resolve(f"{RUN}:checkpoint-1", run), resolve(f"{RUN}:checkpoint-3", run), settings=settings)
    assert a.loaded is b.loaded and set(a.loaded.adapters) == {"a", "b"}
    ans_a, ans_b = a.ask(QUESTION), b.ask(QUESTION)
    for spec, ans in ((f"{RUN}:checkpoint-1", ans_a), (f"{RUN}:checkpoint-3", ans_b)):
        assert ChatSession(settings).load(spec, workspace=run).ask(QUESTION) == ans, spec


def test_cli_chat_with_a_run(ws):
    proc = run_cli("-w", ws, "chat", RUN, "--prompt", QUESTION, "--temperature", "0", "--max-new-tokens", "12")
    assert proc.returncode == 0, proc.stderr
    expected = ChatSession(GenerationSettings(temperature=0, max_new_tokens=12)).load(RUN, workspace=ws).ask(QUESTION)
    assert proc.stdout == expected + "\n"
    bad = run_cli("-w", ws, "chat", RUN, "--checkpoint", "7", "--prompt", "hi")
    assert_one_line_error(bad, "checkpoint-7", "checkpoint-1")
    both = run_cli("-w", ws, "chat", RUN, "--adapter", ws / "runs" / RUN / "adapter", "--prompt", "hi")
    assert_one_line_error(both, "is a run")


async def test_screen_compare_fills_in_the_runs_base(ws):
    """A run in the model field, then ctrl+t: RUN:base vs RUN, loaded on one shared base."""
    from test_chat_screen import SIZE, make_app, until

    app = make_app(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#chat-model").value = RUN
        await pilot.press("ctrl+t")
        assert screen.query_one("#chat-model").value == f"{RUN}:base"
        assert screen.query_one("#chat-model-b").value == RUN
        await until(pilot, lambda: len(screen.sessions) == 2 and not screen.loading_models, "both models")
        a, b = screen.sessions
        assert a.loaded is b.loaded and a.source.label == f"{RUN}:base" and b.source.label == RUN
        assert str(screen.query_one("#chat-title-b").render()) == f"B: {RUN}"


def test_a_logged_sample_is_what_chat_answers_from_that_checkpoint(ws):
    """One generation path: the answer a run logged at step N is `chat RUN:checkpoint-N --temperature 0`'s.

    With the run's own system prompt and template (chat takes both from the run), and its token budget.
    """
    from train_helpers import events

    logged = {e["step"]: [a["answer"] for a in e["answers"]] for e in events(ws / "runs" / RUN, "sample")}
    assert set(logged) == {0, 2, 4}
    assert logged[0] != logged[4], "training changed nothing the samples show: the test would prove little"
    # One prompt per checkpoint (each chat is a process start); the second prompt on the final adapter.
    for spec, step, k in ((f"{RUN}:checkpoint-2", 2, 0), (RUN, 4, 1), (f"{RUN}:base", 0, 0)):
        prompt, want = PROMPTS[k], logged[step][k]
        got = run_cli("-w", ws, "chat", spec, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "10")
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == want, (spec, prompt)

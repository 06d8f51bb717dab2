"""tuitune eval on the tiny model: every number in the report against a direct computation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from train_helpers import make_workspace, write_config

RUN = "ev"


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model) -> Path:
    """A split self-cognition set and a finished 4-step LoRA run on its train half (checkpoints 2, 4)."""
    ws = make_workspace(tmp_path_factory.mktemp("eval") / "ws", tiny_model)
    proc = run_cli("-w", ws, "data", "split", ws / "data" / "self_cognition.jsonl", "-o", ws / "data" / "split",
                   "--test-ratio", "0.2", "--group-by", "input")
    assert proc.returncode == 0, proc.stderr
    cfg = write_config(ws, "ev", **{"data.train": "data/split/train.jsonl", "training.max_steps": 4,
                                    "training.save_steps": 2, "training.lr": 0.02, "evaluation.prompts": []})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", RUN, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ws


@pytest.fixture(scope="module")
def report(ws):
    out = ws / "evals" / "r1"
    proc = run_cli("-w", ws, "eval", RUN, "--max-samples", "6", "--max-new-tokens", "12", "--checkpoints",
                   "-o", out, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("held-out loss ")
    rep = json.loads((out / "report.json").read_text())
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    return out, rep, records, proc.stdout.splitlines()[0]


def _direct_losses(model_dir, adapter, records, tokenizer_dir):
    """Per-record loss from a plain forward pass with labels (transformers' own loss)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuitune.encode import encode_conversation

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    out = []
    for rec in records:
        enc = encode_conversation(tok, rec, "auto", 2048)
        with torch.no_grad():
            res = model(input_ids=torch.tensor([enc["input_ids"]]), labels=torch.tensor([enc["labels"]]))
        out.append((float(res.loss), sum(1 for x in enc["labels"][1:] if x != -100)))
    return out


def test_every_number_matches_a_direct_computation(ws, report):
    import sacrebleu

    from tuitune.data import load_records
    from tuitune.eval.metrics import is_cjk, rouge_l

    out, rep, records, line = report
    held = load_records(ws / "data" / "split" / "test.jsonl")[:6]
    assert rep["records"] == len(records) == 6 and rep["data"].endswith("test.jsonl")
    base = ws / "models" / "tiny-chat"
    adapter = ws / "runs" / RUN / "adapter"
    for side, direct in (("target", _direct_losses(base, adapter, held, adapter)),
                         ("baseline", _direct_losses(base, None, held, base))):
        for rec, (loss, tokens) in zip(records, direct):
            assert rec[side]["tokens"] == tokens
            assert rec[side]["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-5)
        mean = sum(l * n for l, n in direct) / sum(n for _, n in direct)
        s = rep["summary"][side]
        assert s["loss"] == pytest.approx(mean, rel=1e-4) and s["ppl"] == pytest.approx(math.exp(mean), rel=1e-4)
        answers = [r[side]["answer"] for r in records]
        refs = [r["reference"] for r in records]
        # sacrebleu's Chinese tokenizer where most references are Chinese (the sample is half Chinese).
        tok = "zh" if sum(is_cjk(r) for r in refs) * 2 > len(refs) else "13a"
        assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(answers, [refs], tokenize=tok).score)
        assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(answers, [refs]).score)
        assert s["rouge_l"] == pytest.approx(sum(rouge_l(a, r) for a, r in zip(answers, refs)) / 6)
        for rec in records[:2]:  # sentence scores by hand
            a, r = rec[side]["answer"], rec["reference"]
            bleu = sacrebleu.sentence_bleu(a, [r], tokenize="zh" if is_cjk(r) else "13a").score
            assert rec[side]["bleu"] == pytest.approx(bleu)
            assert rec[side]["chrf"] == pytest.approx(sacrebleu.sentence_chrf(a, [r]).score)
            assert rec[side]["exact"] == float(a.strip() == r.strip())
    assert rep["summary"]["target"]["loss"] < rep["summary"]["baseline"]["loss"], "4 steps at lr 0.02 must help"
    better, worse, same = (sum(r["verdict"] == v for r in records) for v in ("better", "worse", "same"))
    assert (rep["summary"]["better"], rep["summary"]["worse"], rep["summary"]["same"]) == (better, worse, same)
    assert f"better on {better} of 6" in line
    b, t = rep["summary"]["baseline"]["loss"], rep["summary"]["target"]["loss"]
    assert line.startswith(f"held-out loss {b:.2f} → {t:.2f} ({(t - b) / b * 100:+.0f}%)")
    # The checkpoint curve: the last checkpoint is the final adapter.
    assert [c["step"] for c in rep["checkpoints"]] == [2, 4]
    assert rep["checkpoints"][-1]["loss"] == pytest.approx(t, rel=1e-5)
    md = (out / "report.md").read_text()
    assert "| held-out loss |" in md and "(best)" in md and records[0]["prompt"] in md


def test_batched_answers_are_the_chat_answers(ws, report):
    """Left-padded batches of 8 answer as `tuitune chat --temperature 0` does, one prompt at a time."""
    _out, _rep, records, _line = report
    # Two records, one side each (every chat is a process start): the target's, then the base's.
    for rec, (spec, side) in zip(records[:2], ((RUN, "target"), (f"{RUN}:base", "baseline"))):
        proc = run_cli("-w", ws, "chat", spec, "--prompt", rec["prompt"], "--temperature", "0",
                       "--max-new-tokens", "12")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout[:-1] == rec[side]["answer"], (spec, rec["prompt"])


def test_marks_are_kept_and_counted(ws, report, tmp_path):
    out = tmp_path / "marked"
    shutil.copytree(report[0], out)
    proc = run_cli("-w", ws, "eval", "--mark", out, "2", "good")
    assert proc.returncode == 0, proc.stderr
    assert "1 marked good" in proc.stdout
    run_cli("-w", ws, "eval", "--mark", out, "3", "bad")
    rep = json.loads((out / "report.json").read_text())
    assert (rep["summary"]["marked_good"], rep["summary"]["marked_bad"]) == (1, 1)
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [r["mark"] for r in records[:3]] == [None, "good", "bad"]
    assert "marked good" in (out / "report.md").read_text()
    assert_one_line_error(run_cli("-w", ws, "eval", "--mark", out, "99", "good"), "no record 99", "1 to 6")
    listed = run_cli("-w", ws, "eval", "--list")
    assert str(report[0]) in listed.stdout and RUN in listed.stdout


def test_bad_input_is_one_line_and_writes_nothing(ws, tmp_path):
    out = tmp_path / "never"
    no_answers = tmp_path / "questions.jsonl"
    no_answers.write_text(json.dumps({"conversation": [{"input": "hi"}]}) + "\n")
    cases = [
        (["--data", no_answers], ("no reference answer", "task: pretrain")),
        ([f"{RUN}:checkpoint-9"], ("no complete checkpoint-9", "checkpoint-2, checkpoint-4")),
        (["--max-samples", "0"], ("--max-samples 0", "1 or more")),
    ]
    for extra, needles in cases:
        target = [] if extra[0].startswith(f"{RUN}:") else [RUN]
        assert_one_line_error(run_cli("-w", ws, "eval", *target, *extra, "-o", out), *needles)
    # A run with no data.eval and no split beside its training file.
    other = tmp_path / "other"
    shutil.copytree(ws, other)
    (other / "data" / "split" / "test.jsonl").unlink()
    assert_one_line_error(run_cli("-w", other, "eval", RUN, "-o", out), "has no held-out file", "no data.eval",
                          "test.jsonl is missing or changed since the split", "--data FILE")
    # An adapter on a model it was not trained on: a copy of the run's adapter naming a wider model.
    from transformers import AutoConfig, AutoModelForCausalLM

    wide = tmp_path / "wide"
    cfg = AutoConfig.from_pretrained(ws / "models" / "tiny-chat")
    cfg.hidden_size, cfg.intermediate_size = cfg.hidden_size * 2, cfg.intermediate_size * 2
    AutoModelForCausalLM.from_config(cfg).save_pretrained(wide)
    for f in (ws / "models" / "tiny-chat").glob("*token*"):
        shutil.copy(f, wide / f.name)
    stray = tmp_path / "stray-adapter"
    shutil.copytree(ws / "runs" / RUN / "adapter", stray)
    acfg = json.loads((stray / "adapter_config.json").read_text())
    acfg["base_model_name_or_path"] = str(wide)
    (stray / "adapter_config.json").write_text(json.dumps(acfg))
    assert_one_line_error(run_cli("-w", ws, "eval", stray, "--data", ws / "data" / "split" / "test.jsonl",
                                  "-o", out), "does not fit", str(wide))
    assert not out.exists() and not list(tmp_path.glob("never*"))


def test_rouge_l_on_words_and_on_chinese_characters():
    from tuitune.eval.metrics import is_cjk, rouge_l

    # LCS "the cat on the mat" = 5 of 5 answer words and 5 of 6 reference words: F1 = 2 * 1 * 5/6 / (1 + 5/6).
    assert rouge_l("The cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    # Characters for Chinese (rouge-score would drop every one): LCS 我是助手 = 4 of 5 and 4 of 6.
    assert is_cjk("我是Alice的助手") and rouge_l("我是小助手", "我是你的助手") == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert rouge_l("", "") == 1.0 and rouge_l("x", "") == 0.0


async def test_the_screen_runs_an_evaluation_marks_and_hands_a_record_to_chat(ws):
    """Key 7: r evaluates the newest run in a worker (progress shown), the report opens, g marks, o opens Chat."""
    from screens.app import TuituneApp
    from tuitune.doctor import Report

    app = TuituneApp(ws, start="eval", doctor=lambda w: Report())
    progress: list = []
    async with app.run_test(size=(120, 36), message_hook=lambda m: progress.append(m)
                            if type(m).__name__ == "Progress" else None) as pilot:
        screen = app.screen
        assert screen.query_one("#eval-target").value == RUN
        screen.query_one("#eval-samples").value = "5"
        screen.query_one("#eval-tokens").value = "8"
        await pilot.press("r")
        for _ in range(1200):
            await pilot.pause(0.1)
            if screen.folder is not None and not screen.running:
                break
        assert screen.folder is not None, str(screen.query_one("#eval-status").render())
        assert {m.what for m in progress} >= {"loss (target)", "answers (target)", "loss (baseline)"}
        rep = json.loads((screen.folder / "report.json").read_text())
        assert rep["records"] == 5 and screen.query_one("#eval-records").row_count == 5
        assert "held-out loss" in str(screen.query_one("#eval-summary").render())
        view = screen.query_one("#eval-report")
        first = view.current()
        assert view.records[first]["prompt"] in str(screen.query_one("#eval-detail").render())
        await pilot.press("g")
        await pilot.pause()
        rep = json.loads((screen.folder / "report.json").read_text())
        assert rep["summary"]["marked_good"] == 1
        prompt = view.records[first]["prompt"]
        await pilot.press("o")
        await pilot.pause()
        assert app.current_mode == "chat" and app.selected_pair == (f"{RUN}:base", RUN, prompt)
        assert app.screen.query_one("#chat-model-b").value == RUN


@pytest.mark.parametrize("first", [(), ("escape",)], ids=["reports-focused", "nothing-focused"])
async def test_after_the_palette_no_field_has_the_cursor_and_5_opens_merge(workspace, first):
    """#20 item 13: on Evaluate, ctrl+p then escape gave the target field the cursor (Textual's auto
    focus, when nothing was focused: after Esc), so 5 typed into it and q Quit left the footer."""
    from textual.widgets import Input

    from screens.app import TuituneApp
    from tuitune.doctor import Report

    app = TuituneApp(workspace, start="eval", doctor=lambda w: Report())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not isinstance(app.focused, Input)
        for key in (*first, "ctrl+p", "escape"):
            await pilot.press(key)
            await pilot.pause()
        assert app.current_mode == "eval" and not isinstance(app.focused, Input), app.focused
        keys = {b.binding.key for b in app.screen.active_bindings.values()}
        assert "q" in keys and "r" in keys
        await pilot.press("5")
        await pilot.pause()
        assert app.current_mode == "merge"
        assert app.step_screens["eval"].query_one("#eval-target", Input).value == ""

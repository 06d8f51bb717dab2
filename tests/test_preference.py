"""Preference tuning (tasks dpo and orpo): the pair record and the shapes it is converted from, the
pairs' tokens, DPO and ORPO runs on the tiny model, the held-out margin, kill -9 and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from train_helpers import ROOT, events, kill_group, make_workspace, state, wait_until, write_config

PAIRS = ROOT / "sample_data" / "preference_sample.jsonl"
DPO = {"task": "dpo", "data.train": "data/train.jsonl", "data.eval": "data/test.jsonl", "data.pack": False,
       "lora.modules_to_save": [], "training.lr": 5e-3, "training.batch_size": 8, "training.logging_steps": 1,
       "training.save_total_limit": None, "evaluation.prompts": [], "evaluation.eval_loss": False}


def _jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


def _read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


SHAPES = [
    ("pref_messages", {  # UltraFeedback-binarized: the whole conversation in each side
        "prompt": "And of Italy?",
        "chosen": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
                   {"role": "user", "content": "And of Italy?"}, {"role": "assistant", "content": "Rome."}],
        "rejected": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
                     {"role": "user", "content": "And of Italy?"}, {"role": "assistant", "content": "Milan."}],
        "score_chosen": 9.0, "score_rejected": 2.0},
     {"conversation": [{"input": "Capital of France?", "output": "Paris."}], "prompt": "And of Italy?",
      "chosen": "Rome.", "rejected": "Milan."}),
    ("pref_messages", {  # TRL's conversational form: the prompt apart, one assistant message a side
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]},
     {"conversation": [], "system": "Be brief.", "prompt": "2+2?", "chosen": "4", "rejected": "5"}),
    ("pref_text", {"prompt": "2+2?", "chosen": "4", "rejected": "22"},
     {"conversation": [], "prompt": "2+2?", "chosen": "4", "rejected": "22"}),
    ("pref_text", {"instruction": "Translate", "input": "chat", "chosen": "cat", "rejected": "chair",
                   "system": "You translate French."},   # LLaMA-Factory's alpaca ranking data
     {"conversation": [], "system": "You translate French.", "prompt": "Translate\nchat", "chosen": "cat",
      "rejected": "chair"}),
    ("sharegpt_ranking", {  # LLaMA-Factory's ranking ShareGPT
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                          {"from": "human", "value": "Who are you?"}],
        "chosen": {"from": "gpt", "value": "Alice's assistant."}, "rejected": {"from": "gpt", "value": "Nobody."},
        "system": "You are kind."},
     {"conversation": [{"system": "You are kind.", "input": "Hi", "output": "Hello!"}], "prompt": "Who are you?",
      "chosen": "Alice's assistant.", "rejected": "Nobody."}),
]


@pytest.mark.parametrize("fmt, item, want", SHAPES)
def test_the_common_shapes_convert_to_the_pair_record(tmp_path, fmt, item, want):
    from tuitune.data import convert, load_records

    src = _jsonl(tmp_path / "in.jsonl", [item])
    report = convert(src, tmp_path / "out.jsonl")
    assert report.format == fmt and report.kept == 1
    assert _read(tmp_path / "out.jsonl") == [want]
    assert load_records(tmp_path / "out.jsonl", task="dpo") == [want]   # what training reads back


def test_a_pair_that_teaches_nothing_is_refused_by_line(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "chosen": "x", "rejected": "y"},
                                         {"prompt": "b", "chosen": "same", "rejected": "same"}])
    proc = run_cli("data", "convert", src, "-o", tmp_path / "out.jsonl")
    assert_one_line_error(proc, "line 2", "same answer")
    assert not (tmp_path / "out.jsonl").exists()


def test_the_split_keeps_a_prompt_on_one_side(tmp_path):
    from tuitune.data import split_file

    res = split_file(PAIRS, tmp_path, test_ratio=0.25, group_by="input")
    assert res.shared_questions == 0 and res.train + res.test == 60
    assert {r["prompt"] for r in _read(res.train_path)}.isdisjoint(r["prompt"] for r in _read(res.test_path))


def test_inspect_shows_both_answers_after_the_same_masked_prompt(tiny_model):
    from tuitune.data.inspect import inspect_file

    res = inspect_file(PAIRS, tiny_model, "chatml", 256)
    rec = _read(PAIRS)[0]
    assert res.task == "dpo" and res.records == 60 and res.rejected_spans is not None
    masked = lambda spans: "".join(t for t, trained in spans if not trained)  # noqa: E731
    trained = lambda spans: "".join(t for t, tr in spans if tr)  # noqa: E731
    assert masked(res.spans) == masked(res.rejected_spans) and rec["prompt"] in masked(res.spans)
    assert trained(res.spans) == rec["chosen"] + "<|im_end|>"
    assert trained(res.rejected_spans) == rec["rejected"] + "<|im_end|>"


def test_preference_settings_that_cannot_work_are_refused():
    from pydantic import ValidationError

    from tuitune.config import RunConfig, get_preset

    assert get_preset("dpo").task == "dpo" and get_preset("orpo").task == "orpo"
    with pytest.raises(ValidationError, match="data.pack"):
        RunConfig(model="m", task="dpo", data={"pack": True})
    with pytest.raises(ValidationError, match="orpo has no reference"):
        RunConfig(model="m", task="orpo", data={"pack": False}, preference={"reference": "copy"})


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    from tuitune.data import split_file

    ws = make_workspace(tmp_path / "ws", tiny_model)
    shutil.copy(PAIRS, ws / "data" / "pairs.jsonl")
    split_file(ws / "data" / "pairs.jsonl", ws / "data", test_ratio=0.25, group_by="input")
    return ws


@pytest.mark.slow
def test_the_data_must_fit_the_task_before_a_run_starts(ws):
    cfg = write_config(ws, "dpo-on-sft", **{**DPO, "data.train": "data/self_cognition.jsonl", "data.eval": None})
    assert_one_line_error(run_cli("-w", ws, "train", cfg), "self_cognition.jsonl", "line 1", "task dpo",
                          "fields conversation")
    cfg = write_config(ws, "sft-on-pairs", **{"data.train": "data/train.jsonl"})
    assert_one_line_error(run_cli("-w", ws, "train", cfg), "train.jsonl", "line 1", "preference pair",
                          "fields conversation, prompt, chosen, rejected")
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())


@pytest.mark.slow
def test_dpo_raises_the_held_out_margin_and_resumes_after_kill9_where_it_would_have_ended(ws):
    from tuitune.eval.run import evaluate, plan

    cfg = write_config(ws, "dpo", **{**DPO, "training.max_steps": 12, "training.save_steps": 4})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "straight", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    train = events(ws / "runs" / "straight", "train")
    assert train[-1]["reward_accuracy"] == 1.0 and train[-1]["reward_margin"] > train[0]["reward_margin"]
    # The held-out pairs (no prompt of them was trained on): the tuned model prefers the chosen answer
    # by far more than the base does.
    _, report = evaluate(plan("straight", ws), ws / "evals" / "dpo")
    base, tuned = report["summary"]["baseline"], report["summary"]["target"]
    print(f"\nheld-out log-prob margin (chosen - rejected): base {base['margin']:+.2f}, tuned {tuned['margin']:+.2f}; "
          f"prefers chosen {base['accuracy']:.0%} -> {tuned['accuracy']:.0%}")
    assert tuned["margin"] > base["margin"] + 2 and tuned["accuracy"] > base["accuracy"] and tuned["accuracy"] >= 0.9
    assert report["summary"]["better"] >= 0.9 * report["records"]

    straight = {e["step"]: e["loss"] for e in train}
    assert run_cli("-w", ws, "train", cfg, "--name", "killed").returncode == 0
    run = ws / "runs" / "killed"
    wait_until(lambda: (run / "checkpoints" / "checkpoint-8" / "trainer_state.json").is_file(), what="checkpoint-8")
    kill_group(state(run)["pgid"])
    proc = run_cli("-w", ws, "runs", "resume", "killed", "--foreground", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    resumed = {e["step"]: e["loss"] for e in events(run, "train")}
    assert state(run)["status"] == "finished" and sorted(resumed) == sorted(straight)
    for step in range(9, 13):
        assert resumed[step] == pytest.approx(straight[step], abs=1e-6), step


@pytest.mark.slow
def test_orpo_trains_without_a_reference_and_reports_its_figures(ws):
    cfg = write_config(ws, "orpo", **{**DPO, "task": "orpo", "training.max_steps": 6, "training.save_steps": 6})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "o", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = ws / "runs" / "o"
    train = events(run, "train")
    assert state(run)["status"] == "finished" and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert all(e["reward_margin"] is not None and e["tokens"] > 0 for e in train)
    assert train[-1]["loss"] < train[0]["loss"]   # ORPO's loss holds the chosen answers' NLL

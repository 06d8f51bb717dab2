"""Prompt records (task grpo, #24 section 1's Data) through `tuitune data convert | split | inspect`.

Every command is the console script as a user types it, run from inside a workspace (the tiny
model in models/tiny-chat, data in data/) with relative paths; outputs are checked on disk.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error
from train_helpers import make_workspace, write_config

TUITUNE = shutil.which("tuitune")

GSM8K = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "A farm has 1,000 hens and buys 250 more. How many hens now?",
     "answer": "1,000 + 250 = 1,250\n#### 1,250"},
    {"question": "Weng earns $12 an hour. How much for 50 minutes?", "answer": "12/60 = 0.2\n0.2*50 = 10\n#### 10"},
]
CHATS = [  # OpenAI messages: a system prompt and a worked example before the question
    {"messages": [{"role": "system", "content": "Answer with a number."},
                  {"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "3 + 3?"}, {"role": "assistant", "content": "6"}]},
    {"messages": [{"role": "system", "content": "Answer with a number."},
                  {"role": "user", "content": "5 + 5?"}, {"role": "assistant", "content": "10"}]},
]
ALPACA = [{"instruction": "Translate to French", "input": "cat", "output": "chat"},
          {"instruction": "Name the capital of Italy", "input": "", "output": "Rome"}]
PAIRS = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}]


def _jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


def _read(path: Path) -> list:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def typed(ws: Path, line: str) -> subprocess.CompletedProcess:
    """``line`` exactly as typed in a shell in the workspace ``ws``."""
    argv = shlex.split(line)
    assert argv[0] == "tuitune"
    return subprocess.run([TUITUNE, *argv[1:]], cwd=ws, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("grpo-data") / "ws", tiny_model)
    data = root / "data"
    _jsonl(data / "gsm8k.jsonl", GSM8K)
    _jsonl(data / "chats.jsonl", CHATS)
    (data / "alpaca.json").write_text(json.dumps(ALPACA), encoding="utf-8")
    _jsonl(data / "pairs.jsonl", PAIRS)
    shutil.copy(ROOT / "sample_data" / "real" / "arithmetic_prompts.jsonl", data / "arithmetic_prompts.jsonl")
    return root


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- convert --------------------------------------------------------------------------------------

def test_gsm8k_becomes_prompt_records_with_the_final_answer(ws):
    proc = typed(ws, "tuitune data convert data/gsm8k.jsonl -o data/gsm8k_prompts.jsonl --to prompts")
    assert proc.returncode == 0, proc.stderr
    assert "format: gsm8k" in proc.stdout and "kept 3 of 3 records as prompt records" in proc.stdout
    assert _read(ws / "data" / "gsm8k_prompts.jsonl") == [
        {"prompt": GSM8K[0]["question"], "answer": "72"}, {"prompt": GSM8K[1]["question"], "answer": "1,250"},
        {"prompt": GSM8K[2]["question"], "answer": "10"}]


def test_gsm8k_without_to_stays_conversations_and_says_how_to_get_prompts(ws):
    proc = typed(ws, "tuitune data convert data/gsm8k.jsonl -o data/gsm8k_sft.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert "--to prompts" in proc.stdout
    assert _read(ws / "data" / "gsm8k_sft.jsonl")[0] == {
        "conversation": [{"input": GSM8K[0]["question"], "output": GSM8K[0]["answer"]}]}


def test_conversations_become_prompts_keeping_the_system_prompt_and_earlier_turns(ws):
    proc = typed(ws, "tuitune data convert data/chats.jsonl -o data/chat_prompts.jsonl --to prompts")
    assert proc.returncode == 0, proc.stderr
    assert "format: openai" in proc.stdout
    assert _read(ws / "data" / "chat_prompts.jsonl") == [
        {"conversation": [{"system": "Answer with a number.", "input": "2 + 2?", "output": "4"}],
         "prompt": "3 + 3?", "answer": "6"},
        {"system": "Answer with a number.", "prompt": "5 + 5?", "answer": "10"}]
    # XTuner conversation records (the demo's), and alpaca with one system prompt for every record.
    proc = typed(ws, "tuitune data convert data/self_cognition.jsonl -o data/sc_prompts.jsonl --to prompts")
    assert proc.returncode == 0, proc.stderr
    first = _read(ws / "data" / "self_cognition.jsonl")[0]["conversation"][-1]
    assert _read(ws / "data" / "sc_prompts.jsonl")[0] == {"prompt": first["input"], "answer": first["output"]}
    proc = typed(ws, "tuitune data convert data/alpaca.json -o data/alpaca_prompts.jsonl --to prompts "
                     "--system 'Be brief.'")
    assert proc.returncode == 0, proc.stderr
    assert _read(ws / "data" / "alpaca_prompts.jsonl") == [
        {"system": "Be brief.", "prompt": "Translate to French\ncat", "answer": "chat"},
        {"system": "Be brief.", "prompt": "Name the capital of Italy", "answer": "Rome"}]


def test_chats_that_end_on_the_user_become_prompts_without_an_answer(ws):
    _jsonl(ws / "data" / "asks.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}]},
        {"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "And doubled?"}]}])
    _jsonl(ws / "data" / "asks_sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "Say hi."}]}])
    proc = typed(ws, "tuitune data convert data/asks.jsonl -o data/asks_prompts.jsonl --to prompts")
    assert proc.returncode == 0, proc.stderr
    assert _read(ws / "data" / "asks_prompts.jsonl") == [
        {"system": "Be brief.", "prompt": "Name a prime."},
        {"conversation": [{"input": "2 + 2?", "output": "4"}], "prompt": "And doubled?"}]
    proc = typed(ws, "tuitune data convert data/asks_sharegpt.jsonl -o data/asks_sharegpt_prompts.jsonl --to prompts")
    assert proc.returncode == 0, proc.stderr
    assert _read(ws / "data" / "asks_sharegpt_prompts.jsonl") == [{"prompt": "Say hi."}]


def test_a_table_becomes_prompts_and_the_mapping_says_so(ws):
    (ws / "data" / "qa.csv").write_text("question,answer\n2 + 2?,4\nCapital of France?,Paris\n", encoding="utf-8")
    proc = typed(ws, "tuitune data convert data/qa.csv -o data/qa_prompts.jsonl --to prompts")
    assert proc.returncode == 0, proc.stderr
    assert "'question' → prompt, 'answer' → answer" in proc.stdout
    assert _read(ws / "data" / "qa_prompts.jsonl") == [{"prompt": "2 + 2?", "answer": "4"},
                                                       {"prompt": "Capital of France?", "answer": "Paris"}]


def test_prompt_records_are_detected_checked_and_kept(ws):
    _jsonl(ws / "data" / "mine.jsonl", [{"prompt": "1 + 1?", "answer": 2}, {"prompt": "Say hi"}])
    proc = typed(ws, "tuitune data convert data/mine.jsonl -o data/mine_checked.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert "format: prompts" in proc.stdout
    assert _read(ws / "data" / "mine_checked.jsonl") == [{"prompt": "1 + 1?", "answer": "2"}, {"prompt": "Say hi"}]


BAD_GSM8K = GSM8K[:1] + [{"question": "How many legs has a cat?", "answer": "Four legs."}]


@pytest.mark.parametrize("name, items, line, needles", [
    ("bad_gsm8k.jsonl", BAD_GSM8K, "tuitune data convert data/bad_gsm8k.jsonl -o data/out.jsonl --to prompts "
     "--format gsm8k", ["data/bad_gsm8k.jsonl", "line 2", "\"answer\"", "####"]),
    ("no_prompt.jsonl", [{"prompt": "ok"}, {"prompt": "  ", "answer": "1"}],
     "tuitune data convert data/no_prompt.jsonl -o data/out.jsonl", ["data/no_prompt.jsonl", "line 2", "\"prompt\""]),
    ("pairs.jsonl", None, "tuitune data convert data/pairs.jsonl -o data/out.jsonl --to prompts",
     ["data/pairs.jsonl", "preference pairs", "--to prompts"]),
    ("self_cognition.jsonl", None, "tuitune data convert data/self_cognition.jsonl -o data/out.jsonl --to prompts "
     "--format text", ["--format text", "pretraining", "--to prompts"]),
    ("prompts.jsonl", [{"prompt": "1 + 1?", "answer": "2"}],
     "tuitune data convert data/prompts.jsonl -o data/out.jsonl --to conversations",
     ["data/prompts.jsonl", "prompt records", "--to conversations"]),
    ("last_turn_no_input.jsonl", [{"conversation": [{"input": "", "output": "a poem"}]}],
     "tuitune data convert data/last_turn_no_input.jsonl -o data/out.jsonl --to prompts",
     ["data/last_turn_no_input.jsonl", "line 1", "input", "prompt"]),
])
def test_what_cannot_become_prompts_is_one_line_and_nothing_is_written(ws, name, items, line, needles):
    if items is not None:
        _jsonl(ws / "data" / name, items)
    assert_one_line_error(typed(ws, line), *needles)
    assert not (ws / "data" / "out.jsonl").exists() and not _leftovers(ws / "data")


# --- split ----------------------------------------------------------------------------------------

def test_split_keeps_prompt_records_and_groups_by_the_prompt(ws):
    # Every record of the sample shares one worked example before its prompt: the prompt is the question.
    proc = typed(ws, "tuitune data split data/arithmetic_prompts.jsonl -o data/psplit --group-by input")
    assert proc.returncode == 0, proc.stderr
    src = _read(ws / "data" / "arithmetic_prompts.jsonl")
    train, test = _read(ws / "data" / "psplit" / "train.jsonl"), _read(ws / "data" / "psplit" / "test.jsonl")
    assert sorted(map(json.dumps, train + test)) == sorted(map(json.dumps, src))
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert len(test) == round(len(src) * 0.3) and "no question is on both sides" in proc.stdout
    # Prompt records without earlier turns (as convert --to prompts writes them).
    assert typed(ws, "tuitune data convert data/gsm8k.jsonl -o data/g.jsonl --to prompts --force").returncode == 0
    proc = typed(ws, "tuitune data split data/g.jsonl -o data/gsplit --test-ratio 0.34")
    assert proc.returncode == 0, proc.stderr
    assert len(_read(ws / "data" / "gsplit" / "train.jsonl")) == 2 and all(
        set(r) == {"prompt", "answer"} for r in _read(ws / "data" / "gsplit" / "test.jsonl"))


def test_split_names_a_bad_prompt_record(ws):
    _jsonl(ws / "data" / "bad_answer.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": ["2"]}])
    assert_one_line_error(typed(ws, "tuitune data split data/bad_answer.jsonl -o data/bsplit"),
                          "data/bad_answer.jsonl", "line 2", "\"answer\" is list")
    assert not (ws / "data" / "bsplit").exists()


# --- inspect --------------------------------------------------------------------------------------

def test_inspect_shows_the_prompt_as_the_model_sees_it_and_the_answer_apart(ws, tiny_model):
    from transformers import AutoTokenizer

    _jsonl(ws / "data" / "sys_prompts.jsonl", [{"system": "Answer with a number.", "prompt": "5 + 5?", "answer": "10"},
                                                {"prompt": "7 + 1?", "answer": "8"}])
    proc = typed(ws, "tuitune data inspect data/sys_prompts.jsonl --model models/tiny-chat --json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    seen = AutoTokenizer.from_pretrained(tiny_model).apply_chat_template(
        [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "5 + 5?"}],
        add_generation_prompt=True, tokenize=False)
    assert res["task"] == "grpo" and res["answer"] == "10" and res["records"] == 2
    assert "".join(text for text, _ in res["spans"]) == seen and not any(t for _, t in res["spans"])
    assert res["record_trained"] == 0 and res["record_tokens"] == res["max"]
    proc = typed(ws, "tuitune data inspect data/sys_prompts.jsonl --model models/tiny-chat --record 2")
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout
    assert "task: grpo" in shown and "7 + 1?" in shown and "<|im_start|>assistant" in shown
    body, after = shown.split("<|im_start|>assistant", 1)
    assert "reference answer: 8" in after and "8" not in body.split("7 + 1?")[-1]


@pytest.mark.parametrize("line, needles", [
    ("tuitune data inspect data/arithmetic_prompts.jsonl --model models/tiny-chat --task sft",
     ["data/arithmetic_prompts.jsonl", "line 1", "prompt record for grpo", "task is sft"]),
    ("tuitune data inspect data/self_cognition.jsonl --model models/tiny-chat --task grpo",
     ["data/self_cognition.jsonl", "line 1", "task grpo learns from prompt records", "--to prompts"]),
])
def test_inspect_with_the_wrong_task_is_one_line(ws, line, needles):
    assert_one_line_error(typed(ws, line), *needles)


# --- data and task ---------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, needles", [
    ({"task": "dpo", "data.train": "data/arithmetic_prompts.jsonl"},
     ["arithmetic_prompts.jsonl", "line 1", "prompt record for grpo", "task is dpo", "set task: grpo"]),
    ({"task": "grpo", "data.train": "data/pairs.jsonl", "data.pack": False},
     ["pairs.jsonl", "line 1", "preference pair", "task is grpo", "set task: dpo or orpo"]),
    ({"task": "sft", "data.train": "data/arithmetic_prompts.jsonl"},
     ["arithmetic_prompts.jsonl", "line 1", "prompt record for grpo", "task is sft", "set task: grpo"]),
])
def test_data_of_another_task_is_one_line(ws, overrides, needles):
    cfg = write_config(ws, "mismatch", **overrides)
    assert_one_line_error(typed(ws, f"tuitune config check configs/{cfg.name}"), *needles)


# --- the Data screen's Convert tab ----------------------------------------------------------------

async def test_the_convert_tab_writes_prompt_records_when_records_says_so(workspace):
    from textual.widgets import Select, Static

    from screens.app import TuituneApp
    from tests.test_data_screen import open_file, settle

    _jsonl(workspace / "data" / "gsm8k.jsonl", GSM8K)
    _jsonl(workspace / "data" / "pairs.jsonl", PAIRS)
    app = TuituneApp(workspace, start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await open_file(app, pilot, "pairs.jsonl")
        await pilot.press("f3")
        screen = app.screen
        assert not screen.query_one("#conv-to").parent.display  # pairs stay pairs
        await open_file(app, pilot, "gsm8k.jsonl")
        await pilot.press("f3")
        records = screen.query_one("#conv-to", Select)
        assert records.parent.display and records.value == "conversations"
        records.focus()
        await pilot.press("enter", "down", "enter")
        assert records.value == "prompts"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        report = str(screen.query_one("#convert-result", Static).render())
        assert "as prompt records (for grpo)" in report, report
        written = screen.query_one("#conv-out").value
        assert _read(workspace / written)[0] == {"prompt": GSM8K[0]["question"], "answer": "72"}
        # Conversations (the default) from GSM8K: the note says how to get prompts, in the tab's words.
        records.focus()
        await pilot.press("enter", "up", "enter")
        assert records.value == "conversations"
        screen.query_one("#conv-out").value = "data/gsm8k_sft.jsonl"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        report = str(screen.query_one("#convert-result", Static).render())
        assert "Records set to prompt records" in report and "--to" not in report, report
        assert "conversation" in _read(workspace / "data" / "gsm8k_sft.jsonl")[0]


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_snap_convert_tab_prompt_records(snap_compare, fixed_workspace, size):
    """GSM8K converted to prompt records from the Convert tab (Records: prompt records), and the report."""
    from screens.app import TuituneApp
    from tests.test_data_screen import open_file
    from tests.test_snap_data import _stable

    _jsonl(fixed_workspace / "data" / "gsm8k.jsonl", GSM8K)

    async def run_before(pilot):
        app = pilot.app
        await _stable(app, pilot)
        await open_file(app, pilot, "gsm8k.jsonl")
        await pilot.press("f3")
        app.screen.query_one("#conv-to").value = "prompts"
        await pilot.press("ctrl+r")
        await _stable(app, pilot)

    assert snap_compare(TuituneApp(fixed_workspace, start="data"), terminal_size=size, run_before=run_before)

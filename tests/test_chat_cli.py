"""``tuitune chat`` from a shell: --prompt, --prompts, the REPL, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, run_cli
from test_chat import QUESTION, make_adapter, make_foreign_adapter, no_template_model

from tuitune.chat import ChatSession, GenerationSettings


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    return make_adapter(tiny_model, tmp_path_factory.mktemp("cli-adapter") / "lora")


def test_help_documents_the_model_forms():
    proc = run_cli("chat", "--help")
    assert proc.returncode == 0
    for needle in ("RUN:checkpoint-N", "RUN:base", "--adapter", "--checkpoint", "--bits", "/reset", "/save",
                   "--prompts", "--seed", "--repetition-penalty"):
        assert needle in proc.stdout, needle


def test_prompt_prints_only_the_answer(tiny_model, adapter):
    proc = run_cli("chat", tiny_model, "--adapter", adapter, "--prompt", QUESTION, "--temperature", "0.8",
                   "--seed", "4", "--max-new-tokens", "20")
    assert proc.returncode == 0, proc.stderr
    expected = ChatSession(GenerationSettings(temperature=0.8, seed=4, max_new_tokens=20)).load(
        str(tiny_model), adapter=str(adapter)).ask(QUESTION)
    assert proc.stdout == expected + "\n"
    assert "error" not in proc.stderr


def test_prompts_file_answers_each_line(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{QUESTION}\n\nWhat is LoRA?\n", encoding="utf-8")
    proc = run_cli("chat", tiny_model, "--prompts", prompts, "--temperature", "0", "--max-new-tokens", "6")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == [QUESTION, "What is LoRA?"]
    assert all(r["tokens"] == 6 and r["tokens_per_s"] > 0 and "answer" in r for r in rows)


def test_repl_commands(tiny_model, tmp_path):
    out = tmp_path / "saved.jsonl"
    script = "\n".join([
        "/set temperature 0.9", "/set top_k 0", "/seed 3", "/system Be Alice.",
        '"""', "first line", "second line", '"""',
        "/save " + str(out), "/set temperature -1", "/bogus", "RESET", "hi \\", "there", "/exit", "never sent",
    ]) + "\n"
    proc = run_cli("chat", tiny_model, "--max-new-tokens", "8", input=script)
    assert proc.returncode == 0, proc.stderr
    assert "(temperature = 0.9)" in proc.stdout and "(seed 3)" in proc.stdout
    assert "(conversation reset)" in proc.stdout
    assert "error: temperature must be 0 or more" in proc.stderr
    assert "error: unknown command /bogus" in proc.stderr
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert rec["conversation"][0]["system"] == "Be Alice."
    assert rec["conversation"][0]["input"] == "first line\nsecond line"
    # The answer after the reset was to the joined "hi \\ there" lines; "never sent" never was.
    assert proc.stderr.count("tokens ·") == 2


# --- bad input: exit 2, one error: line --------------------------------------------------------

def test_not_a_model_folder(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    proc = run_cli("chat", tmp_path, "--prompt", "hi")
    assert_one_line_error(proc, str(tmp_path), "not a model folder", "config.json")


def test_model_without_chat_template_lists_the_templates(tiny_model, tmp_path):
    plain = no_template_model(tiny_model, tmp_path / "plain")
    proc = run_cli("chat", plain, "--prompt", "hi")
    assert_one_line_error(proc, "no chat template", "--template", "chatml", "llama3_chat", "qwen_chat")
    ok = run_cli("chat", plain, "--template", "chatml", "--prompt", "hi", "--max-new-tokens", "3")
    assert ok.returncode == 0, ok.stderr


def test_adapter_that_does_not_fit(tiny_model, tmp_path):
    bad = make_foreign_adapter(tmp_path / "foreign")
    proc = run_cli("chat", tiny_model, "--adapter", bad, "--prompt", "hi")
    assert_one_line_error(proc, "does not fit", str(bad))


def test_adapter_that_is_not_an_adapter(tiny_model, tmp_path):
    proc = run_cli("chat", tiny_model, "--adapter", tmp_path, "--prompt", "hi")
    assert_one_line_error(proc, "not a LoRA adapter folder", "adapter_config.json")


def test_non_integer_seed(tiny_model):
    assert_one_line_error(run_cli("chat", tiny_model, "--seed", "1.5", "--prompt", "hi"), "--seed", "whole number")


def test_negative_temperature(tiny_model):
    assert_one_line_error(run_cli("chat", tiny_model, "--temperature", "-0.5", "--prompt", "hi"),
                          "--temperature", "0 or more")


def test_bad_top_p(tiny_model):
    assert_one_line_error(run_cli("chat", tiny_model, "--top-p", "2", "--prompt", "hi"), "top_p")


def test_bits_without_a_gpu(tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(run_cli("chat", tiny_model, "--bits", "4", "--prompt", "hi"), "--bits 4", "CUDA GPU")


def test_unknown_run(workspace):
    assert_one_line_error(run_cli("-w", workspace, "chat", "nosuchrun", "--prompt", "hi"), "nosuchrun", "run")


def test_chat_modules_import_light():
    """The Chat screen, the verb and the engine module import without torch & co (they load it on use)."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "peft", "bitsandbytes")
    code = ("import sys, screens.chat, tuitune.chat, tuitune.commands.chat; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _signal_state(pid: int) -> str:
    """The child's signal masks (ignored, blocked, caught), for a failure's message."""
    try:
        lines = open(f"/proc/{pid}/status", encoding="ascii").read().splitlines()
    except OSError:
        return ""
    return "\n" + "\n".join(line for line in lines if line.startswith(("SigIgn", "SigBlk", "SigCgt", "SigPnd", "ShdPnd")))


def test_repl_ctrl_c_stops_the_answer_not_the_repl(tiny_model):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tuitune", "chat", str(tiny_model), "--max-new-tokens", "100000",
                             "--top-k", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.extend(iter(lambda: s.read(1), "")), daemon=True)
               for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    try:
        proc.stdin.write("hello\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while "".join(out).count(">>> ") < 1 or len("".join(out)) < 40:  # the answer is being written
            assert time.monotonic() < deadline and proc.poll() is None, "".join(err)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        while "stopped]" not in "".join(err):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(err) + _signal_state(proc.pid)
            time.sleep(0.05)
        proc.stdin.write("/exit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in "".join(err)

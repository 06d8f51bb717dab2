"""Template parity: the chat_template a run saves renders, token for token, what training encoded
and what `tuitune chat` sends, for every named template, with and without a system prompt,
single and multi-turn, on a tokenizer without BOS (the tiny model's) and one with (SmolLM2's)."""

from __future__ import annotations

import itertools

import pytest

from tuitune.templates import TEMPLATES

TURNS = [{"input": "Who are you?", "output": "I am Alice's helper, trained by Alice."},
         {"input": "请介绍一下你自己", "output": "我是小助手，很高兴为你服务。"},
         {"input": "What is 2 + 2?", "output": "4."}]


def _tokenizers():
    from tuitune.sample import cache_root, tiny_model_path

    out = [("tiny", str(tiny_model_path()))]
    real = cache_root() / "smollm2-135m-instruct"
    if (real / "tokenizer.json").is_file():
        out.append(("smollm2", str(real)))
    return out


def _ids(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(scope="module", params=_tokenizers(), ids=lambda p: p[0])
def tokenizer_dir(request):
    return request.param[1]


@pytest.mark.parametrize("template,system,turns", list(itertools.product(sorted(TEMPLATES), ["", "You are Tiny."],
                                                                          [1, 3])))
def test_the_saved_template_renders_what_training_and_chat_encode(tokenizer_dir, template, system, turns):
    if template == "llama3_chat" and "smollm2" in tokenizer_dir:
        # A known gap, kept visible: this asserts the mismatch, so it fails the day it is fixed. SmolLM2's
        # tokenizer has no Llama 3 header tokens, so "<|end_header_id|>\n\n" is text and its "\n\n"
        # meets the answer: training tokenizes prompt and answer apart ("\n\n" | "I"), a whole
        # rendering splits it "\n" | "\nI". With a Llama 3 tokenizer the header is a special token.
        with pytest.raises(AssertionError):
            _check(tokenizer_dir, template, system, turns)
        return
    _check(tokenizer_dir, template, system, turns)


def _check(tokenizer_dir, template, system, turns):
    from transformers import AutoTokenizer

    from tuitune.encode import encode_conversation
    from tuitune.generation import messages_for
    from tuitune.templates import encode_prompt, to_jinja, to_messages

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = to_jinja(tok, template, system)
    conv = [dict(t) for t in TURNS[:turns]]
    # Training puts the run's system prompt on the first turn of every record (build._with_system).
    record = {"conversation": [dict(conv[0], **({"system": system} if system else {})), *conv[1:]]}
    trained = encode_conversation(tok, record, template, 0)["input_ids"]
    messages = to_messages(conv)   # no system message: the saved template brings the run's default
    assert _ids(tok.apply_chat_template(messages, tokenize=True)) == trained
    # A user's own system message wins over the default, in both.
    own = [{"role": "system", "content": "Be brief."}, *messages]
    record_own = {"conversation": [dict(conv[0], system="Be brief."), *conv[1:]]}
    assert _ids(tok.apply_chat_template(own, tokenize=True)) == encode_conversation(tok, record_own, template, 0)[
        "input_ids"]
    # The prompt of the last question: what chat sends (with the run's system prompt).
    history, question = messages[:-2], messages[-2]["content"]
    sent = encode_prompt(tok, template, messages_for(question, system, history))
    assert _ids(tok.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)) == sent


def test_auto_keeps_the_tokenizers_own_template():
    from transformers import AutoTokenizer

    from tuitune.sample import tiny_model_path
    from tuitune.templates import to_jinja

    tok = AutoTokenizer.from_pretrained(str(tiny_model_path()))
    assert to_jinja(tok, "auto", "x") is None


def test_a_runs_artifacts_carry_its_template_and_the_merged_model_answers_as_the_run(tmp_path, tiny_model):
    """Trained with a named template and a system prompt: each checkpoint, the adapter and the merged
    model hold it as their chat_template, the merged model stops on the end-of-turn token, and
    chat with the merged folder (its own template, no run) answers as chat with the run."""
    import json

    from conftest import run_cli
    from train_helpers import make_workspace, write_config

    from tuitune.templates import to_jinja

    ws = make_workspace(tmp_path / "ws", tiny_model)
    cfg = write_config(ws, "tpl", **{"template": "chatml", "data.system": "You are Tiny.", "training.max_steps": 2,
                                     "training.save_steps": 1, "training.lr": 0.02, "evaluation.prompts": []})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "tpl", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from transformers import AutoTokenizer

    run = ws / "runs" / "tpl"
    want = to_jinja(AutoTokenizer.from_pretrained(tiny_model), "chatml", "You are Tiny.")
    for folder in (run / "adapter", run / "checkpoints" / "checkpoint-1", run / "checkpoints" / "checkpoint-2"):
        assert AutoTokenizer.from_pretrained(folder).chat_template == want, folder
    merged = ws / "models" / "tpl-merged"
    proc = run_cli("-w", ws, "merge", "tpl", "-o", merged)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tok = AutoTokenizer.from_pretrained(merged)
    assert tok.chat_template == want
    eos = json.loads((merged / "generation_config.json").read_text())["eos_token_id"]
    assert tok.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])
    assert "chat template: `chatml`" in (merged / "README.md").read_text()
    for prompt in ("请介绍一下你自己",):
        a = run_cli("-w", ws, "chat", "tpl", "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "12")
        b = run_cli("-w", ws, "chat", merged, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "12")
        assert a.returncode == b.returncode == 0, a.stderr + b.stderr
        assert a.stdout == b.stdout, prompt

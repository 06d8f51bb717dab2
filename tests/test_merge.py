"""The streaming merge on the tiny model saved in several shards, checked against peft."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors import safe_open
from merge_helpers import config, make_adapter, reference_and_merged, sharded_tiny

from tuitune.errors import TuituneError
from tuitune.merge import merge
from tuitune.sources import resolve


@pytest.fixture(scope="module")
def base() -> Path:
    return sharded_tiny()


def shards(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.safetensors"))


def stored_keys(folder: Path) -> set[str]:
    keys = set()
    for name in shards(folder):
        with safe_open(str(folder / name), "pt") as f:
            keys |= set(f.keys())
    return keys


VARIANTS = {
    "rank1": dict(r=1, lora_alpha=2),
    "rank64": dict(r=64, lora_alpha=16),
    "rslora": dict(r=8, lora_alpha=16, use_rslora=True),
    "lora-bias": dict(target_modules=["q_proj", "k_proj", "v_proj"], lora_bias=True),
    "bias-all": dict(target_modules=["q_proj", "o_proj"], bias="all"),
    "alpha-pattern": dict(r=4, lora_alpha=8, rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 32}),
    "embedding-lora": dict(target_modules=["embed_tokens", "q_proj"]),
    "lm-head-lora": dict(target_modules=["lm_head", "q_proj"]),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_streamed_merge_equals_base_plus_adapter(base, tmp_path, name):
    adapter = make_adapter(base, tmp_path / "adapter", **VARIANTS[name])
    progress = []
    result = merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out", max_shard_size="700KB",
                   on_progress=lambda *a: progress.append(a))
    assert result.streamed and result.fallback is None
    assert result.verification.ok and result.verification.top1_agree == 1.0
    ref, got, plain, _ = reference_and_merged(base, adapter, tmp_path / "out")
    assert (ref - plain).abs().max() > 1e-3, "the adapter must change the logits for this test to mean anything"
    assert (ref - got).abs().max() < 1e-4
    # Several output shards with an index, written shard by shard with progress.
    assert len(shards(tmp_path / "out")) >= 3 and (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert progress[-1][0] == progress[-1][1] == result.tensors and progress[-1][2] == progress[-1][3]
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)
    assert not any("lora" in k for k in stored_keys(tmp_path / "out"))
    assert not list(tmp_path.glob("out.partial-*"))


def test_modules_to_save_that_diverge_untie_the_embeddings(base, tmp_path):
    """embed_tokens and lm_head trained in full as two copies: the merged model unties and writes both."""
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj"],
                           modules_to_save=["embed_tokens", "lm_head"])
    result = merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out")
    assert result.untied and result.verification.ok
    assert config(tmp_path / "out")["tie_word_embeddings"] is False
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= stored_keys(tmp_path / "out")
    ref, got, plain, model = reference_and_merged(base, adapter, tmp_path / "out")
    assert (ref - got).abs().max() < 1e-4 and (ref - plain).abs().max() > 1e-3
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_modules_to_save_with_weight_tying_stay_tied(base, tmp_path):
    """ensure_weight_tying (what tuitune's tiny-demo uses): one matrix, still tied after the merge."""
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj"],
                           modules_to_save=["embed_tokens", "lm_head"], ensure_weight_tying=True)
    result = merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out")
    assert not result.untied and result.verification.ok
    assert config(tmp_path / "out")["tie_word_embeddings"] is True
    assert "lm_head.weight" not in stored_keys(tmp_path / "out")
    ref, got, plain, model = reference_and_merged(base, adapter, tmp_path / "out")
    assert (ref - got).abs().max() < 1e-4 and (ref - plain).abs().max() > 1e-3
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_only_lm_head_saved_unties_with_base_embeddings(base, tmp_path):
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj"], modules_to_save=["lm_head"])
    result = merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out")
    assert result.untied and result.verification.ok
    ref, got, _, _ = reference_and_merged(base, adapter, tmp_path / "out")
    assert (ref - got).abs().max() < 1e-4


def test_bf16_output_is_verified_with_a_bf16_tolerance(base, tmp_path):
    adapter = make_adapter(base, tmp_path / "adapter", r=8)
    result = merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out", dtype="bf16")
    assert result.dtype == "bf16" and result.verification.ok
    assert result.verification.tolerance > 1e-3
    assert config(tmp_path / "out")["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "out" / shards(tmp_path / "out")[0]), "pt") as f:
        assert f.get_slice(next(iter(f.keys()))).get_dtype() == "BF16"


def test_dora_falls_back_to_peft_and_says_so(base, tmp_path):
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj", "v_proj"], use_dora=True)
    lines = []
    result = merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out", log=lines.append)
    assert not result.streamed and "DoRA" in result.fallback
    assert any("falling back to peft merge_and_unload" in l for l in lines)
    assert result.verification.ok
    assert "fallback: DoRA" in (tmp_path / "out" / "README.md").read_text()


def test_fan_in_fan_out_on_a_gpt2_style_model(tmp_path):
    """GPT-2 keeps Conv1D weights as (in, out): the delta is transposed (fan_in_fan_out)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=2100, n_positions=64)).save_pretrained(
        base, max_shard_size="200KB")
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    src = resolve(str(adapter), tmp_path, need="adapter")
    result = merge(src, tmp_path / "out", verify_result=False)
    assert result.streamed
    ref, got, plain, _ = reference_and_merged(base, adapter, tmp_path / "out")
    assert (ref - got).abs().max() < 1e-4 and (ref - plain).abs().max() > 1e-3


def test_a_failure_mid_write_leaves_no_output(base, tmp_path):
    adapter = make_adapter(base, tmp_path / "adapter", r=2)

    def boom(done, total, shard, n):
        if shard == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out", max_shard_size="500KB", on_progress=boom)
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_cancel_stops_before_writing(base, tmp_path):
    adapter = make_adapter(base, tmp_path / "adapter", r=2)
    with pytest.raises(TuituneError, match="cancelled"):
        merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out", cancelled=lambda: True)
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_a_failed_verification_writes_nothing(base, tmp_path, monkeypatch):
    import tuitune.merge as m

    adapter = make_adapter(base, tmp_path / "adapter", r=2)
    monkeypatch.setitem(m.TOLERANCE, "fp32", -1.0)
    with pytest.raises(TuituneError, match="verification FAILED.*was not written"):
        merge(resolve(str(adapter), tmp_path, need="adapter"), tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_verification_streams_both_models_and_catches_a_lost_delta(base, tmp_path, monkeypatch):
    """Verification reads the weights module by module (no model is loaded whole), and still
    tells a merged model that lost one LoRA delta from a correct one."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from tuitune.merge import verify

    adapter = make_adapter(base, tmp_path / "adapter", r=2)
    src = resolve(str(adapter), tmp_path, need="adapter")
    merge(src, tmp_path / "out", max_shard_size="700KB", verify_result=False)

    def whole(*a, **k):
        raise AssertionError("verification loaded a whole model")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", whole)
    good = verify(src, tmp_path / "out", "fp32")
    assert good.ok and good.top1_agree == 1.0 and good.max_abs_diff < 1e-4
    # Put one base tensor back into the merged shards, as if its delta had been lost.
    key = "model.layers.1.mlp.down_proj.weight"
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())["weight_map"]
    shard = tmp_path / "out" / index[key]
    tensors = load_file(shard)
    base_index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    tensors[key] = load_file(base / base_index[key])[key]
    save_file(tensors, shard, metadata={"format": "pt"})
    bad = verify(src, tmp_path / "out", "fp32")
    assert not bad.ok and bad.max_abs_diff > bad.tolerance

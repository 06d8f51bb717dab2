"""The VRAM estimator: parameter counts, published memory figures, errors, advice.

Published figures and the settings each one assumed
---------------------------------------------------
LLaMA-Factory README, "Hardware Requirement" table (7B and 70B columns). The
table states no batch size or length; it is the memory to *run* a fine-tune, so
we assume the smallest sensible setting: batch 1, max length 512, gradient
checkpointing on (LLaMA-Factory's default), LoRA rank 8 on all linear layers
(its ``lora_target: all``), SDPA attention, AdamW. "GB" is read as 10**9 bytes.
"Full (bf16 or fp16)" is mixed precision (fp32 master weights + fp32 Adam,
16 B/param: ``precision="bf16"``); "Full (pure_bf16)" keeps weights, grads and
Adam states in bf16 (8 B/param: ``precision="bf16-pure"``).

torchtune README, "Memory and training speed" (Llama 3.1 8B, 1x RTX 4090):
batch 2, packed to 2048 tokens, activation checkpointing on (the recipe
default), torch.compile on, its chunked cross-entropy
(``CEWithChunkedOutputLoss`` -> ``chunked_loss=True``). The shipped configs use
LoRA rank 8 on q, v, output projections and the MLP (LoRA) and q, k, v, output
+ MLP (QLoRA); we assume those. torchtune reports what the PyTorch allocator
measured, which does not include the CUDA context, so the comparison leaves out
our fixed ``overhead`` part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from tuitune.errors import TuituneError
from tuitune.vram import (
    GIB,
    Advice,
    Estimate,
    ModelShape,
    advise,
    estimate,
    estimate_model_dir,
    read_model_shape,
    shape_from_config,
)

LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
}
LLAMA2_70B = {
    **LLAMA2_7B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8,
}
LLAMA31_8B = {
    **LLAMA2_7B, "intermediate_size": 14336, "num_key_value_heads": 8, "vocab_size": 128256,
    "rope_theta": 500000.0,
}
GB = 1e9 / GIB  # one decimal gigabyte in GiB

# Published parameter counts (model cards / safetensors metadata); the count is exact for all of them.
PARAM_COUNTS = [
    (LLAMA2_7B, 6_738_415_616),
    (LLAMA2_70B, 68_976_648_192),
    (LLAMA31_8B, 8_030_261_248),
    ({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "vocab_size": 32000, "tie_word_embeddings": False}, 7_241_732_096),
    ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
      "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
      "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}, 494_032_768),
    ({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
      "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
      "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True},
     596_049_920),
    ({"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "vocab_size": 92544, "bias": False, "tie_word_embeddings": False},
     7_737_708_544),
    ({"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "hidden_size": 2048,
      "intermediate_size": 16384, "num_hidden_layers": 18, "num_attention_heads": 8,
      "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 256000}, 2_506_172_416),
    ({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 2304,
      "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
      "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256000}, 2_614_341_888),
    ({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072,
      "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 32, "vocab_size": 32064, "tie_word_embeddings": False}, 3_821_079_552),
    ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768, "n_layer": 12,
      "n_head": 12, "n_inner": None, "n_positions": 1024, "vocab_size": 50257}, 124_439_808),
    ({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 768,
      "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
      "vocab_size": 50304, "tie_word_embeddings": False}, 162_322_944),  # Pythia-160m
    ({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
      "tie_word_embeddings": False}, 46_702_792_704),
    ({"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 2048,
      "intermediate_size": 5632, "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
      "num_experts": 60, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_attention_heads": 16,
      "num_key_value_heads": 16, "vocab_size": 151936, "tie_word_embeddings": False,
      "decoder_sparse_step": 1, "mlp_only_layers": []}, 14_315_784_192),  # Qwen1.5-MoE-A2.7B
]


@pytest.mark.parametrize("cfg,expected", PARAM_COUNTS,
                         ids=[c["architectures"][0] for c, _ in PARAM_COUNTS])
def test_parameter_count_matches_published(cfg, expected):
    assert shape_from_config(cfg).n_params == expected


def test_tied_embeddings_counted_once():
    tied = shape_from_config({**LLAMA2_7B, "tie_word_embeddings": True}).n_params
    untied = shape_from_config(LLAMA2_7B).n_params
    assert untied - tied == 32000 * 4096


def test_multimodal_text_config_is_read():
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
           "text_config": {k: v for k, v in LLAMA2_7B.items() if k != "architectures"},
           "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24}}
    shape = shape_from_config(cfg)
    assert shape.hidden_size == 4096 and shape.vocab_size == 32000
    assert shape.architecture == "LlavaForConditionalGeneration"
    # The language model plus a (frozen) vision tower of about 300 M params.
    assert 6_738_415_616 + 250e6 < shape.n_params < 6_738_415_616 + 350e6


# --- published memory figures -----------------------------------------------------------

LF = dict(batch_size=1, max_length=512, gradient_checkpointing=True, lora_r=8, lora_targets="all-linear")
LLAMA_FACTORY = [
    # (config, settings, published GB)
    (LLAMA2_7B, dict(method="full", precision="bf16"), 120),
    (LLAMA2_7B, dict(method="full", precision="bf16-pure"), 60),
    (LLAMA2_7B, dict(method="lora"), 16),
    (LLAMA2_7B, dict(method="qlora"), 6),
    (LLAMA2_70B, dict(method="lora"), 160),
    (LLAMA2_70B, dict(method="qlora"), 48),
]


@pytest.mark.parametrize("cfg,settings,published_gb", LLAMA_FACTORY,
                         ids=[f"{'70B' if c['hidden_size'] == 8192 else '7B'}-{s['method']}-{s.get('precision', '')}"
                              for c, s, _ in LLAMA_FACTORY])
def test_llama_factory_hardware_table(cfg, settings, published_gb):
    est = estimate(shape_from_config(cfg), **LF, **settings)
    published = published_gb * GB
    assert 0.7 * published <= est.total_gib <= 1.3 * published, (est.total_gib, published, est.parts)


TT = dict(batch_size=2, max_length=2048, gradient_checkpointing=True, lora_r=8, chunked_loss=True)


@pytest.mark.parametrize("method,targets,published_gib", [
    ("lora", "q_proj,v_proj,output_proj,gate_proj,up_proj,down_proj", 16.2),
    ("qlora", "q_proj,k_proj,v_proj,output_proj,gate_proj,up_proj,down_proj", 7.4),
])
def test_torchtune_measured_peaks(method, targets, published_gib):
    est = estimate(shape_from_config(LLAMA31_8B), method=method, lora_targets=targets, **TT)
    allocated = est.total_gib - est.parts["overhead"]
    assert 0.7 * published_gib <= allocated <= 1.3 * published_gib, (allocated, est.parts)


def test_torchtune_lora_q_v_only_still_within_range():
    # If one assumes LoRA on q and v only (r=8), the answer barely moves: the base weights dominate.
    est = estimate(shape_from_config(LLAMA31_8B), method="lora", lora_targets=["q_proj", "v_proj"], **TT)
    assert 0.7 * 16.2 <= est.total_gib - est.parts["overhead"] <= 1.3 * 16.2


def test_full_fine_tune_bytes_per_param():
    shape = shape_from_config(LLAMA2_7B)
    amp = estimate(shape, method="full", precision="bf16")
    pure = estimate(shape, method="full", precision="bf16-pure")
    state = lambda e: sum(e.parts[k] for k in ("weights", "trainable", "gradients", "optimizer")) * GIB
    assert state(amp) / shape.n_params == pytest.approx(16.0)
    assert state(pure) / shape.n_params == pytest.approx(8.0)
    assert amp.trainable_params == pure.trainable_params == shape.n_params


def test_qlora_weights_are_about_half_a_byte_per_linear_param():
    shape = shape_from_config(LLAMA31_8B)
    est = estimate(shape, method="qlora")
    embed_bytes = 2 * 2 * 128256 * 4096  # embed_tokens + untied lm_head stay 16-bit
    linear_bytes = est.parts["weights"] * GIB - embed_bytes - 2 * shape.norm_params
    assert linear_bytes / shape.linear_params == pytest.approx(0.516, abs=0.005)


def test_logits_are_big_for_big_vocabularies():
    small = estimate(shape_from_config(LLAMA2_7B), max_length=2048)
    big = estimate(shape_from_config(LLAMA31_8B), max_length=2048)
    assert big.parts["logits"] == pytest.approx(small.parts["logits"] * 128256 / 32000)
    assert big.parts["logits"] > 2.0  # 2048 tokens x 128k vocab x 10 B


def _saved_tensor_bytes(model, ids) -> int:
    """Bytes autograd keeps for backward after one forward pass (parameters excluded)."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_formula_matches_what_autograd_saves(checkpointing):
    """The per-layer activation count against a real bf16 Qwen2 (GQA, SDPA) forward on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
           "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 8,
           "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True}
    hf = Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")},
                     attn_implementation="sdpa")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf, dtype=torch.bfloat16)
    model.train()
    if checkpointing:
        import warnings

        with warnings.catch_warnings():  # transformers 5 renames it activation_checkpointing_enable
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    b, s = 2, 512
    measured = _saved_tensor_bytes(model, torch.randint(0, 1000, (b, s)))

    shape = shape_from_config(cfg)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    est = estimate(shape, method="full", batch_size=b, max_length=s, gradient_checkpointing=checkpointing)
    expected = est.parts["activations"] * GIB + b * s * 1000 * 4  # + the fp32 log-softmax the loss saves
    if checkpointing:  # the one recomputed layer only exists during backward
        expected -= b * s * shape.activation_elems_per_token_layer() * 2
    assert measured == pytest.approx(expected, rel=0.03), (measured, expected)


# --- monotonicity a user would notice ---------------------------------------------------


@pytest.fixture(scope="module")
def l8b() -> ModelShape:
    return shape_from_config(LLAMA31_8B)


def test_qlora_below_lora_below_full(l8b):
    q, l, f = (estimate(l8b, method=m).total_gib for m in ("qlora", "lora", "full"))
    assert q < l < f


def test_gradient_checkpointing_lowers_activations(l8b):
    on = estimate(l8b, gradient_checkpointing=True, max_length=4096)
    off = estimate(l8b, gradient_checkpointing=False, max_length=4096)
    assert off.parts["activations"] > 5 * on.parts["activations"]
    assert off.total_gib > on.total_gib


def test_longer_max_length_and_bigger_batch_raise(l8b):
    totals = [estimate(l8b, max_length=n).total_gib for n in (512, 1024, 2048, 4096)]
    assert totals == sorted(totals) and len(set(totals)) == 4
    assert estimate(l8b, batch_size=4).total_gib > estimate(l8b, batch_size=1).total_gib


def test_zero3_on_two_gpus_lowers_per_gpu(l8b):
    one = estimate(l8b, method="full")
    ddp = estimate(l8b, method="full", gpus=2)
    z2 = estimate(l8b, method="full", gpus=2, deepspeed="zero2")
    z3 = estimate(l8b, method="full", gpus=2, deepspeed="zero3")
    z3_4 = estimate(l8b, method="full", gpus=4, deepspeed="zero3")
    assert ddp.total_gib == pytest.approx(one.total_gib)  # DDP replicates everything
    assert one.total_gib > z2.total_gib > z3.total_gib > z3_4.total_gib
    assert z3.parts["weights"] < one.parts["weights"]


def test_offload_moves_optimizer_to_cpu(l8b):
    z3 = estimate(l8b, method="full", deepspeed="zero3")
    off = estimate(l8b, method="full", deepspeed="zero3_offload")
    assert off.parts["optimizer"] == 0 and off.cpu_gib > 90
    assert off.total_gib < 10 < z3.total_gib


def test_lora_rank_and_targets_change_trainable(l8b):
    r8 = estimate(l8b, lora_r=8)
    r64 = estimate(l8b, lora_r=64)
    qv = estimate(l8b, lora_r=64, lora_targets=["q_proj", "v_proj"])
    assert r64.trainable_params == 8 * r8.trainable_params
    # q: 64*(4096+4096), v: 64*(4096+1024), 32 layers
    assert qv.trainable_params == 32 * 64 * (8192 + 5120)
    assert estimate(l8b, lora_targets="wqkv,wo,w1,w2,w3").trainable_params == r64.trainable_params


def test_estimate_to_dict_is_json(l8b):
    d = json.loads(json.dumps(estimate(l8b, method="qlora").to_dict()))
    for key in ("model", "parts", "total_gib", "n_params", "trainable_params", "method", "max_length",
                "batch_size", "gradient_checkpointing", "gpus", "deepspeed"):
        assert key in d
    assert d["model"]["architecture"] == "LlamaForCausalLM"
    assert d["total_gib"] == pytest.approx(sum(d["parts"].values()), abs=0.01)
    assert {"weights", "trainable", "gradients", "optimizer", "activations", "overhead"} <= set(d["parts"])


@pytest.mark.parametrize("kwargs,needle", [
    (dict(method="prefix"), "method"),
    (dict(deepspeed="zero1"), "deepspeed"),
    (dict(max_length=0), "max length"),
    (dict(precision="int8"), "precision"),
    (dict(lora_targets="q_proj,nonsense"), "nonsense"),
])
def test_bad_settings_are_user_errors(l8b, kwargs, needle):
    with pytest.raises(TuituneError, match=f"(?i){needle}"):
        estimate(l8b, **kwargs)


# --- reading a model folder -------------------------------------------------------------


def test_reads_config_from_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA31_8B))
    assert read_model_shape(tmp_path).n_params == 8_030_261_248
    assert read_model_shape(tmp_path / "config.json").n_params == 8_030_261_248
    est = estimate_model_dir(tmp_path, method="qlora", max_length=1024)
    assert isinstance(est, Estimate) and est.method == "qlora" and est.max_length == 1024


def test_folder_without_config(tmp_path):
    with pytest.raises(TuituneError) as e:
        read_model_shape(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "config.json" in msg and "\n" not in msg


def test_missing_folder(tmp_path):
    with pytest.raises(TuituneError, match="nope: no such folder"):
        read_model_shape(tmp_path / "nope")


def test_broken_json_names_line_and_column(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "hidden_size": 4096,\n  "vocab_size" 32000\n}\n')
    with pytest.raises(TuituneError) as e:
        read_model_shape(tmp_path)
    msg = str(e.value)
    assert "config.json" in msg and "line 3" in msg and "column" in msg


def test_unknown_architecture_names_missing_fields(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["FancyNetForCausalLM"], "model_type": "fancynet", "width": 1024, "vocab_size": 50000}))
    with pytest.raises(TuituneError) as e:
        read_model_shape(tmp_path)
    msg = str(e.value)
    assert "FancyNetForCausalLM" in msg and "config.json" in msg
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        assert field in msg
    assert "vocab_size" not in msg.split("lacks", 1)[1]


def test_moe_without_expert_size_is_named():
    cfg = {"architectures": ["OddMoe"], "model_type": "oddmoe", "hidden_size": 1024, "num_hidden_layers": 4,
           "num_attention_heads": 8, "vocab_size": 1000, "num_experts": 8}
    with pytest.raises(TuituneError, match="moe_intermediate_size"):
        shape_from_config(cfg)


def test_tiny_model_param_count(tiny_model):
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
    shape = read_model_shape(tiny_model)
    assert abs(shape.n_params - real) <= 0.05 * real, (shape.n_params, real)
    est = estimate_model_dir(tiny_model, method="lora", max_length=256)
    assert est.n_params == shape.n_params and 0 < est.trainable_params < est.n_params
    assert est.total_gib < 2


# --- advice ------------------------------------------------------------------------------


def test_advise_fits(l8b):
    est = estimate(l8b, method="qlora", max_length=1024)
    adv = advise(est, [22.1])
    assert isinstance(adv, Advice) and adv.fits is True
    assert adv.message == f"needs {est.total_gib:.1f} GiB per GPU, GPU 0 has 22.1 GiB free: fits"
    assert adv.suggestions == []


def test_advise_does_not_fit_and_suggestions_fit(l8b):
    est = estimate(l8b, method="full", max_length=2048, batch_size=4, gradient_checkpointing=False)
    free = [22.0]
    adv = advise(est, free)
    assert adv.fits is False and "does not fit" in adv.message
    assert adv.suggestions and len(adv.suggestions) == len(adv.changes)
    base = est.settings()
    for change in adv.changes:
        again = estimate(l8b, **{**base, **change})
        assert again.total_gib <= min(free[:again.gpus]), (change, again.total_gib)
    assert any("qlora" in s for s in adv.suggestions), adv.suggestions


def test_advise_prefers_cheap_changes(l8b):
    # LoRA at 4096 tokens without checkpointing needs ~46 GiB; checkpointing alone brings it to ~25 GiB,
    # and it is offered before anything that changes the method or the data.
    est = estimate(l8b, method="lora", max_length=4096, gradient_checkpointing=False)
    adv = advise(est, [26.0])
    assert adv.fits is False
    assert adv.changes[0] == {"gradient_checkpointing": True}
    assert adv.suggestions[0].startswith("turn on gradient checkpointing (")
    # No pair that merely adds to a change which already fits on its own.
    assert not any("gradient_checkpointing" in c and len(c) > 1 for c in adv.changes)
    # On a slightly smaller card checkpointing is no longer enough alone: it comes paired.
    adv = advise(est, [23.5])
    assert adv.suggestions and all(s.startswith("turn on gradient checkpointing + ") for s in adv.suggestions)


def test_advise_suggests_zero3_when_more_gpus_are_there(l8b):
    est = estimate(l8b, method="full", precision="bf16")
    adv = advise(est, [79.0, 79.0])
    assert adv.fits is False
    assert {"gpus": 2, "deepspeed": "zero3"} in adv.changes
    assert any(s.startswith("2 GPUs with ZeRO-3") for s in adv.suggestions)


def test_advise_when_fewer_gpus_than_asked(l8b):
    est = estimate(l8b, method="lora", gpus=4, deepspeed="zero3")
    adv = advise(est, [80.0])
    assert adv.fits is False and "needs 4 GPUs" in adv.message and "found 1" in adv.message
    assert adv.changes == [{"gpus": 1}]  # nothing more is needed on one 80 GiB card
    assert adv.suggestions[0].startswith("use the 1 GPU here (")


def test_advise_nothing_fits(l8b):
    est = estimate(shape_from_config(LLAMA2_70B), method="full")
    adv = advise(est, [4.0])
    assert adv.fits is False and adv.suggestions == [] and "smaller model" in adv.message


def test_advise_without_gpu(l8b):
    est = estimate(l8b, method="lora")
    adv = advise(est, [])
    assert adv.fits is None
    assert "no GPU" in adv.message and f"{est.total_gib:.1f} GiB" in adv.message
    assert json.loads(json.dumps(adv.to_dict()))["fits"] is None


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, tuitune.vram; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# --- a hub id: config.json from the local hub cache (issue 12, item 14) ----------------------------------

def _fake_hub_cache(home: Path, repo_id: str, cfg: dict, revision: str = "0" * 40) -> Path:
    """The hub cache's layout (huggingface_hub's own format): refs/main → snapshots/<rev>/config.json."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    blob = repo / "blobs" / "c0ffee"
    blob.parent.mkdir()
    blob.write_text(json.dumps(cfg))
    (snap / "config.json").symlink_to(Path("..") / ".." / "blobs" / "c0ffee")
    return snap / "config.json"


def test_estimate_a_hub_id_from_the_local_hub_cache(tmp_path, tiny_model):
    import json as _json

    cfg = _json.loads((tiny_model / "config.json").read_text())
    cfg.update(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, vocab_size=32000)
    _fake_hub_cache(tmp_path / "hf", "internlm/internlm2_5-7b-chat", cfg)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = run_cli("env", "--estimate", "internlm/internlm2_5-7b-chat", "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    est = _json.loads(proc.stdout)
    n = est.get("n_params") or est["estimate"]["n_params"]
    assert 5e9 < n < 8e9, n  # a 7B shape (the tiny config ties the embeddings)
    # Neither a folder nor in the cache, offline: one line that says both and what to do.
    proc = run_cli("env", "--estimate", "nobody/nothing-7b", env=env, cwd=tmp_path)
    assert_one_line_error(proc, "nobody/nothing-7b", "hub cache", "offline")
    # A path that does not exist is still a missing folder.
    assert_one_line_error(run_cli("env", "--estimate", "./no/such", env=env, cwd=tmp_path), "no such folder")


async def test_env_screen_estimates_a_hub_id_from_the_cache_and_wraps_the_checks_at_80x24(
        tmp_path, tiny_model, workspace, monkeypatch):
    import json as _json

    from conftest import widget_text
    from test_app import make_app
    from test_merge_screen import assert_shown_whole

    cfg = _json.loads((tiny_model / "config.json").read_text())
    cfg.update(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24)
    _fake_hub_cache(tmp_path / "hf", "internlm/internlm2_5-7b-chat", cfg)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = make_app(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        # Each check's finding reads whole (wrapped in its cell, not cut).
        from test_merge_screen import visible_lines

        lines = visible_lines(app.screen, app.screen.query_one("#env-checks"))
        at = lines[0].index("found")  # the "found" column, read down the table
        shown = "".join("".join(line[at:] for line in lines[1:]).split())
        for check in app.screen.report.checks:
            assert "".join(check.detail.split()) in shown, (check.detail, lines)
        await pilot.press("v")
        await pilot.pause()
        app.screen.query_one("#est-model").value = "internlm/internlm2_5-7b-chat"
        await pilot.pause()
        out = widget_text(app.screen.query_one("#env-estimate"))
        assert "total" in out and "does not exist" not in out, out
        app.screen.query_one("#est-model").value = "nobody/nothing-7b"
        await pilot.pause()
        assert_shown_whole(app.screen, app.screen.query_one("#env-estimate"))
        assert "not in the hub cache" in widget_text(app.screen.query_one("#env-estimate"))
        # Enter asks the hub; offline, the one-line reason is shown in place.
        app.screen.query_one("#est-model").focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "offline" in widget_text(app.screen.query_one("#env-estimate"))


QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize("task,kernels,whole", [
    ("sft", "auto", False), ("pretrain", "liger", False), ("sft", "none", True), ("dpo", "auto", True),
    ("grpo", "auto", True),
])
def test_the_estimate_counts_the_logits_the_runs_loss_holds(tmp_path, task, kernels, whole):
    """An sft or pretrain run with kernels auto or liger computes its loss in chunks (or Liger's fused
    loss) and never holds the (tokens x vocabulary) logits; kernels none and the tasks whose loss TRL
    computes do. A 7B model with a 152k vocabulary at 4 x 2048 tokens: 3.5 GiB of logits, not 11.6,
    and the verdict on a 24 GiB card turns on it."""
    from tuitune.config import RunConfig, load_config, save_config
    from tuitune.vram import LOGIT_BYTES, LOGIT_BYTES_CHUNKED, estimate_for_config

    model = tmp_path / "qwen7b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN25_7B))
    cfg = RunConfig.model_validate({"model": str(model), "task": task, "method": "lora",
                                    "data": {"max_length": 2048, "pack": False},
                                    "training": {"batch_size": 4, "kernels": kernels}})
    (tmp_path / "configs").mkdir()
    save_config(cfg, tmp_path / "configs" / "run.yaml")
    est = estimate_for_config(load_config(tmp_path / "configs" / "run.yaml", workspace=tmp_path))
    per = LOGIT_BYTES if whole else LOGIT_BYTES_CHUNKED
    assert est.chunked_loss is not whole
    assert est.parts["logits"] == pytest.approx(4 * 2048 * 152064 * per / GIB)
    assert est.parts["logits"] == pytest.approx(11.6 if whole else 3.48, abs=0.01)


def test_one_translation_of_a_config_into_an_estimate(tmp_path, tiny_model):
    """`config check` and the Config step show the same figure, from vram.estimate_for_config,
    and it follows the config's settings."""
    from conftest import run_cli
    from train_helpers import make_workspace, write_config

    from screens.widgets.config.side import vram_text
    from tuitune.config import load_config
    from tuitune.vram import estimate_for_config

    ws = make_workspace(tmp_path / "ws", tiny_model)
    small = write_config(ws, "small", **{"training.batch_size": 2})
    big = write_config(ws, "big", **{"training.batch_size": 32, "training.gradient_checkpointing": False})
    a = estimate_for_config(load_config(small, workspace=ws))
    b = estimate_for_config(load_config(big, workspace=ws))
    assert b.total_gib > a.total_gib and a.batch_size == 2 and not b.gradient_checkpointing
    proc = run_cli("-w", ws, "config", "check", small, "--no-machine")
    assert proc.returncode == 0, proc.stderr
    assert f"vram: ≈ {a.total_gib:.2f} GiB per GPU" in proc.stdout
    assert f"≈ [b]{a.total_gib:.2f} GiB[/]" in vram_text(load_config(small, workspace=ws), [])

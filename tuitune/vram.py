"""How much GPU memory a fine-tune needs, from a model folder's ``config.json`` alone.

Pure Python: no weights are read and nothing heavy is imported, so ``tuitune env
--estimate`` answers in milliseconds on a laptop. All sizes below are bytes; the
result is reported in GiB (2**30 bytes) **per GPU**.

The formula
===========
Notation: ``P`` parameters (counted from the architecture fields, tied
embeddings once), ``P_lin`` the parameters of the decoder layers' linear layers
(what QLoRA quantizes), ``T`` LoRA parameters, ``b`` micro batch, ``s`` max
length, ``L`` layers, ``h`` hidden size, ``a`` / ``kv`` attention / key-value
heads of size ``d``, ``i`` MLP intermediate size, ``V`` vocabulary.

Weights (part ``weights``)
    16-bit: 2 B/param (4 B with ``precision="fp32"``). QLoRA: the linear layers
    in NF4 with double quantization (bitsandbytes and torchao agree): 4 bits +
    one 8-bit absmax per 64 weights + one fp32 constant per 256 absmax =
    4.127 bits = 0.516 B/param; embeddings, ``lm_head`` and norms stay 16-bit.
    PEFT's ``prepare_model_for_kbit_training`` would upcast those to fp32 (add
    2 B per non-linear param); this estimate assumes it is not used.
Trainable params (``trainable_params``)
    full: ``P``. LoRA/QLoRA: ``r * (in + out)`` per targeted linear;
    ``"all-linear"`` = q, k, v, o, gate, up, down in every layer (every expert of
    an MoE layer; never the router or ``lm_head``).
Training state per trainable param (parts ``trainable``, ``gradients``, ``optimizer``)
    AdamW keeps two states (m, v). Mixed precision (``precision="bf16"``,
    ``"fp16"`` or the alias ``"amp"``; LLaMA-Factory's "Full (bf16 or fp16)",
    DeepSpeed's bf16/fp16 mode) follows the ZeRO paper (Rajbhandari et al. 2020):
    full fine-tune = 2 (16-bit weights) + 2 (16-bit grads) + 4 (fp32 master
    copy, part ``trainable``) + 8 (fp32 m, v) = 16 B/param. LoRA adapters are
    kept in fp32 by PEFT: 4 (adapter, ``trainable``) + 4 (grad) + 8 (m, v).
    Pure 16-bit (``precision="bf16-pure"``, alias ``"pure_bf16"``; weights,
    grads and Adam states all bf16, no master copy) = 2 + 2 + 4 = 8 B/param.
    ``"fp32"`` = 4 + 4 + 8 = 16 B/param and 4-byte activations.
Activations (part ``activations``)
    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models") give ``s*b*h*(34 + 5*a*s/h)`` bytes per GPT layer
    without recompute. Redone for today's decoder layer (RMSNorm, SwiGLU, no
    dropout, grouped KV heads, SDPA/flash attention so the ``5*a*s/h`` score
    term is gone; only a per-head logsumexp is kept), counting the tensors
    autograd saves, in 16-bit elements per token per layer:
      attention: norm 4h (HF RMSNorm saves its fp32 input, 2h, the normalized
                 bf16 tensor for the weight's grad, h, and its output, h, which
                 is the q/k/v input) + q a*d + k, v 2*kv*d + attention output a*d
      MLP, gated: norm 4h + gate i + act(gate) i + up i + product i = 4h + 4i
      MLP, plain (GPT-2/NeoX): 4h + 2i;  MoE: top-k experts' 4i each
                 + 2h per routed token copy + any shared expert
    For Llama-2-7B that is 24h + 8i bytes = 45.5*h, against the paper's 34*h
    for a GELU layer with dropout masks. tests/test_vram.py checks this count
    against the tensors autograd actually saves in a small bf16 Qwen2 (SDPA),
    where it agrees within 1 percent. LoRA adds ``r`` per targeted linear (the
    ``lora_A`` output) and, with ``lora_dropout > 0``, the dropped-out input
    plus its 1-byte mask. Outside the layers the final norm saves 4h.
    Without gradient checkpointing every layer's activations ``A`` are held:
    ``b*s*(L*A + 8h)`` bytes. With it (HF checkpoints each decoder layer) only
    each layer's input, 2h bytes, plus one layer's full activations while that
    layer is recomputed in backward: ``b*s*(2hL + A + 8h)``.
Logits (part ``logits``)
    HF computes ``lm_head`` in bf16 (2 B per token per vocab entry), the loss
    upcasts to fp32 (4 B) and cross-entropy keeps the fp32 log-softmax (4 B):
    ``b*s*V*10`` bytes, 2.4 GiB at b=1, s=2048, V=128k, often more than all
    checkpointed activations. ``chunked_loss=True`` models torchtune's
    ``CEWithChunkedOutputLoss`` / Liger-style fused loss: bf16 logits plus one
    eighth in fp32, ``b*s*V*3``.
Overhead (part ``overhead``)
    CUDA context, cuBLAS/cuDNN workspaces and allocator slack: 0.75 GiB fixed
    (what ``nvidia-smi`` shows above ``torch.cuda.max_memory_allocated``).
Several GPUs (``gpus``, ``deepspeed``)
    Without DeepSpeed each GPU is a DDP replica: nothing is divided.
    ``zero2``: master copy, gradients and optimizer states are divided by
    ``gpus``. ``zero3``: weights too, plus a gather buffer of two layers' 16-bit
    weights (the prefetch) or the embedding, whichever is larger.
    ``*_offload``: master copy, optimizer states and gradient partitions move
    to CPU RAM (the GPU keeps a one-layer 16-bit gradient bucket);
    ``zero3_offload`` also moves the weights, keeping only the gather buffer.
    What moves to the CPU is reported as ``cpu_gib``.

Checked against published figures (tests/test_vram.py states the settings):
Llama-2-7B/70B in LLaMA-Factory's hardware table and Llama-3.1-8B's measured
torchtune peaks; parameter counts are exact for Llama, Mistral, Qwen2/2.5/3,
InternLM2, Gemma/Gemma2, Phi-3, GPT-2, GPT-NeoX, Mixtral and Qwen-MoE configs.

Assumes SDPA/flash attention (HF's default), no activation offloading, AdamW,
an unquantized checkpoint (a GPTQ/AWQ folder's ``quantization_config`` is not
read) and, for MoE models, LoRA on every expert's linears.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

from tuitune.errors import TuituneError

GIB = float(1 << 30)

METHODS = ("lora", "qlora", "full")
DEEPSPEED = (None, "zero2", "zero3", "zero2_offload", "zero3_offload")
PRECISIONS = {"bf16": "amp", "fp16": "amp", "amp": "amp",
              "bf16-pure": "pure", "pure_bf16": "pure", "pure-bf16": "pure", "fp16-pure": "pure",
              "fp32": "fp32"}

#: NF4 with double quantization, bytes per parameter (4 + 8/64 + 32/(64*256) bits).
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8
#: CUDA context + workspaces + allocator slack, GiB.
OVERHEAD_GIB = 0.75
#: Bytes per (token x vocab entry) held for the loss: bf16 logits + fp32 upcast + fp32 log-softmax.
LOGIT_BYTES = 10.0
#: The same with a chunked (torchtune) / fused loss: bf16 logits + 1/8 of the fp32 pair.
LOGIT_BYTES_CHUNKED = 3.0

ALL_LINEAR = ("q", "k", "v", "o", "gate", "up", "down")
_TARGET_ALIASES = {
    "q": "q", "q_proj": "q", "query": "q", "wq": "q",
    "k": "k", "k_proj": "k", "key": "k", "wk": "k",
    "v": "v", "v_proj": "v", "value": "v", "wv": "v",
    "o": "o", "o_proj": "o", "out_proj": "o", "output_proj": "o", "dense": "o", "wo": "o",
    "c_proj": "o",
    "qkv": "qkv", "qkv_proj": "qkv", "wqkv": "qkv", "query_key_value": "qkv", "c_attn": "qkv",
    "gate": "gate", "gate_proj": "gate", "w1": "gate",
    "up": "up", "up_proj": "up", "w3": "up", "fc1": "up", "c_fc": "up", "dense_h_to_4h": "up",
    "gate_up_proj": "gate_up",
    "down": "down", "down_proj": "down", "w2": "down", "fc2": "down", "dense_4h_to_h": "down",
}

# Families whose MLP is a plain two-matrix one (up, act, down) rather than gated (SwiGLU/GeGLU).
_PLAIN_MLP = {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "phi", "falcon", "bloom", "opt",
              "starcoder2", "gpt_neo", "codegen", "mpt"}
# Families with LayerNorm (weight + bias) instead of RMSNorm.
_LAYERNORM = _PLAIN_MLP | {"stablelm", "cohere"}
# Families whose linears all carry a bias.
_ALL_BIAS = {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "phi", "bloom", "opt", "starcoder2", "gpt_neo",
             "codegen"}
# Families with learned absolute position embeddings.
_LEARNED_POS = {"gpt2", "gpt_bigcode", "opt", "gpt_neo"}


# --- the shape --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a causal LM, read from its config."""

    model_type: str
    architecture: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    gated_mlp: bool = True
    layernorm: bool = False  # LayerNorm (2h params) instead of RMSNorm (h)
    linear_bias: str = "none"  # "none" | "qkv" | "all"
    norms_per_layer: int = 2
    qk_norm: bool = False
    position_embeddings: int = 0  # learned absolute positions (GPT-2)
    num_experts: int = 0  # 0 = dense model
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    moe_layers: int = 0  # how many of num_layers are MoE layers
    extra_params: int = 0  # e.g. a vision tower, held frozen in 16-bit

    # --- per-layer linears: (name, in, out, multiplicity) ---

    def _attn_linears(self) -> list[tuple[str, int, int, int]]:
        h, qd, kvd = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return [("q", h, qd, 1), ("k", h, kvd, 1), ("v", h, kvd, 1), ("o", qd, h, 1)]

    def _mlp_linears(self, i: int, mult: int = 1) -> list[tuple[str, int, int, int]]:
        h = self.hidden_size
        if self.gated_mlp:
            return [("gate", h, i, mult), ("up", h, i, mult), ("down", i, h, mult)]
        return [("up", h, i, mult), ("down", i, h, mult)]

    def _dense_layer(self) -> list[tuple[str, int, int, int]]:
        return self._attn_linears() + self._mlp_linears(self.intermediate_size)

    def _moe_layer(self) -> list[tuple[str, int, int, int]]:
        out = self._attn_linears() + [("router", self.hidden_size, self.num_experts, 1)]
        out += self._mlp_linears(self.moe_intermediate_size, self.num_experts)
        if self.shared_expert_intermediate_size:
            out += self._mlp_linears(self.shared_expert_intermediate_size)
            out += [("shared_gate", self.hidden_size, 1, 1)]
        return out

    def _layers(self) -> list[tuple[int, list[tuple[str, int, int, int]]]]:
        dense = self.num_layers - self.moe_layers
        out = []
        if dense:
            out.append((dense, self._dense_layer()))
        if self.moe_layers:
            out.append((self.moe_layers, self._moe_layer()))
        return out

    # --- counts ---

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' linear layers (what QLoRA stores in 4 bit)."""
        return sum(n * sum(i * o * m for _, i, o, m in lin) for n, lin in self._layers())

    @property
    def bias_params(self) -> int:
        if self.linear_bias == "none":
            return 0
        total = 0
        for n, lin in self._layers():
            for name, _i, o, m in lin:
                if self.linear_bias == "all" or name in ("q", "k", "v"):
                    total += n * o * m
        return total

    @property
    def norm_params(self) -> int:
        per = self.hidden_size * (2 if self.layernorm else 1)
        qk = 2 * self.head_dim if self.qk_norm else 0
        return self.num_layers * (self.norms_per_layer * per + qk) + per

    @property
    def embedding_params(self) -> int:
        """Input embedding (+ untied lm_head) + learned positions."""
        emb = self.vocab_size * self.hidden_size
        return emb * (1 if self.tie_word_embeddings else 2) + self.position_embeddings * self.hidden_size

    @property
    def n_params(self) -> int:
        return (self.linear_params + self.bias_params + self.norm_params + self.embedding_params
                + self.extra_params)

    @property
    def other_params(self) -> int:
        """Everything that stays 16-bit under QLoRA."""
        return self.n_params - self.linear_params

    def lora_params(self, r: int, targets: Iterable[str] = ALL_LINEAR) -> int:
        targets = set(targets)
        total = 0
        for n, lin in self._layers():
            for name, i, o, m in lin:
                if name in targets:
                    total += n * m * r * (i + o)
        return total

    def layer_param_max(self) -> int:
        return max(sum(i * o * m for _, i, o, m in lin) for _, lin in self._layers())

    def activation_elems_per_token_layer(self) -> float:
        """16-bit elements autograd saves per token in one decoder layer (mean over layers)."""
        h, qd, kvd = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = 4 * h + qd + 2 * kvd + qd
        per_i = 4 if self.gated_mlp else 2

        def mlp(i: int) -> float:
            return 4 * h + per_i * i

        dense = mlp(self.intermediate_size)
        if not self.moe_layers:
            return attn + dense
        moe = (4 * h + self.experts_per_token * (per_i * self.moe_intermediate_size + 2 * h)
               + self.num_experts + (per_i * self.shared_expert_intermediate_size))
        n_dense = self.num_layers - self.moe_layers
        return attn + (n_dense * dense + self.moe_layers * moe) / self.num_layers

    def lora_activation_elems_per_token_layer(self, r: int, targets: Iterable[str], dropout: bool) -> float:
        targets = set(targets)
        total = 0.0
        for n, lin in self._layers():
            for name, i, _o, m in lin:
                if name not in targets:
                    continue
                # Experts see only their routed tokens: top-k of them per token.
                share = (self.experts_per_token if m > 1 else 1)
                per = r + (1.5 * i if dropout else 0)  # dropped-out input (2 B) + bool mask (1 B)
                total += n * share * per
        return total / self.num_layers

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_params"] = self.n_params
        return d


def _first(cfg: dict, *names: str):
    for n in names:
        v = cfg.get(n)
        if v is not None:
            return v
    return None


_FIELD_NAMES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "model_dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "vocab_size": ("vocab_size", "padded_vocab_size", "n_vocab"),
}


def shape_from_config(cfg: dict, source: str = "config.json") -> ModelShape:
    """Count a causal LM's parameters from its ``config.json`` contents.

    Multimodal configs: the language model is read from ``text_config`` (fields it
    lacks are taken from the top level); a ``vision_config`` tower is added to
    ``extra_params`` as frozen weights. Raises :class:`TuituneError` naming the
    architecture and the fields it lacks when the size cannot be determined.
    """
    if not isinstance(cfg, dict):
        raise TuituneError(f"{source} does not hold a JSON object: point at a Hugging Face model's config.json")
    top = cfg
    archs = top.get("architectures") or []
    architecture = str(archs[0]) if archs else str(top.get("model_type") or "unknown")
    extra = 0
    text = cfg.get("text_config") or cfg.get("llm_config") or cfg.get("language_config")
    if isinstance(text, dict):
        merged = {k: v for k, v in top.items() if k not in ("text_config", "vision_config")}
        merged.update(text)
        cfg = merged
        vis = top.get("vision_config")
        if isinstance(vis, dict):
            extra = _vision_params(vis)
    model_type = str(cfg.get("model_type") or top.get("model_type") or "unknown").lower()

    if cfg.get("kv_lora_rank") or cfg.get("q_lora_rank"):
        raise TuituneError(
            f"{source}: architecture {architecture} ({model_type}) uses multi-head latent attention "
            "(kv_lora_rank), which the VRAM estimator does not model yet: estimate by parameter count instead")

    values = {k: _first(cfg, *names) for k, names in _FIELD_NAMES.items()}
    missing = [k if len(names) == 1 else f"{k} (or {'/'.join(names[1:])})"
               for k, names in _FIELD_NAMES.items() if not isinstance(values[k], int) or values[k] <= 0]
    h = values["hidden_size"]
    layernorm = model_type in _LAYERNORM
    gated = model_type not in _PLAIN_MLP
    inter = _first(cfg, "intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim")
    num_experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts") or 0
    moe_inter = _first(cfg, "moe_intermediate_size") or 0
    if num_experts and not moe_inter:
        moe_inter = inter or 0  # Mixtral: intermediate_size is each expert's
    if inter is None and not gated and isinstance(h, int):
        inter = 4 * h  # GPT-2 / GPT-J: n_inner null means 4h
    if inter is None and num_experts and moe_inter:
        inter = moe_inter
    if not isinstance(inter, int) or inter <= 0:
        missing.append("intermediate_size (or n_inner/ffn_hidden_size)")
    if num_experts and not moe_inter:
        missing.append("moe_intermediate_size")
    if missing:
        raise TuituneError(
            f"{source}: architecture {architecture} (model_type {model_type}) lacks {', '.join(missing)}: "
            "the VRAM estimator cannot size it; check that this is a causal LM's config.json")

    heads = values["num_attention_heads"]
    kv = _first(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
    if kv is None:
        kv = 1 if cfg.get("multi_query") and not cfg.get("new_decoder_architecture") else heads
    head_dim = _first(cfg, "head_dim", "kv_channels") or h // heads
    layers = values["num_hidden_layers"]

    moe_layers = 0
    if num_experts:
        step = cfg.get("decoder_sparse_step") or 1
        mlp_only = set(cfg.get("mlp_only_layers") or [])
        first_dense = cfg.get("first_k_dense_replace") or 0
        moe_layers = sum(1 for l in range(layers)
                         if l not in mlp_only and l >= first_dense and (l + 1) % step == 0)
    shared = _first(cfg, "shared_expert_intermediate_size") or 0
    if not shared and cfg.get("n_shared_experts") and moe_inter:
        shared = int(cfg["n_shared_experts"]) * moe_inter

    if model_type in _ALL_BIAS or cfg.get("bias") is True or cfg.get("mlp_bias"):
        bias = "all"
    elif model_type in ("qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl") or cfg.get("attention_bias") \
            or cfg.get("qkv_bias") or cfg.get("add_qkv_bias"):
        bias = "qkv"
    else:
        bias = "none"
    norms = 4 if model_type.startswith(("gemma2", "gemma3")) else 2
    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = top.get("tie_word_embeddings")
    if tie is None:  # transformers' default is True; GPT-NeoX and a few others override it
        tie = model_type not in ("gpt_neox", "chatglm")
    pos = int(_first(cfg, "n_positions", "max_position_embeddings") or 0) if model_type in _LEARNED_POS else 0

    return ModelShape(
        model_type=model_type, architecture=architecture, hidden_size=h, num_layers=layers,
        num_heads=heads, num_kv_heads=int(kv), head_dim=int(head_dim), intermediate_size=int(inter),
        vocab_size=values["vocab_size"], tie_word_embeddings=bool(tie), gated_mlp=gated,
        layernorm=layernorm, linear_bias=bias, norms_per_layer=norms,
        qk_norm=model_type.startswith(("qwen3", "olmo2", "gemma3")), position_embeddings=pos,
        num_experts=int(num_experts), experts_per_token=int(_first(cfg, "num_experts_per_tok",
                                                                   "moe_topk", "top_k") or (2 if num_experts else 0)),
        moe_intermediate_size=int(moe_inter), shared_expert_intermediate_size=int(shared),
        moe_layers=moe_layers, extra_params=extra,
    )


def _vision_params(vis: dict) -> int:
    """A ViT tower, roughly: per layer 4h^2 attention + 2*h*i MLP."""
    h = _first(vis, "hidden_size", "embed_dim", "width")
    n = _first(vis, "num_hidden_layers", "depth", "layers")
    if not isinstance(h, int) or not isinstance(n, int):
        return 0
    i = _first(vis, "intermediate_size", "mlp_dim") or 4 * h
    return n * (4 * h * h + 2 * h * int(i))


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_hub_id(text: str) -> bool:
    """``owner/name`` (what Config accepts as a hub model id), not a path like ``./x`` or ``/x``."""
    return bool(_HUB_ID.match(str(text))) and not str(text).startswith((".", "~"))


def _hub_cache_dir() -> str:
    """The hub cache as the environment says now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_config_path(repo_id: str, online: bool | None = None) -> Path:
    """``config.json`` of hub model ``repo_id``: from the local hub cache, else downloaded (when online).

    ``online=None`` follows the environment (HF_HUB_OFFLINE=1: the cache only); ``False``
    reads only the cache (a screen that estimates on every key). Raises one TuituneError
    when neither has it.
    """
    cache = _hub_cache_dir()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as e:  # pragma: no cover - transformers brings it
        raise TuituneError(f"{repo_id}: reading a hub model needs huggingface_hub (pip install huggingface_hub)") from e
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    if online is False or (online is None and _offline()):
        why = "while offline (HF_HUB_OFFLINE)" if online is None else "(not asked online yet)"
        raise TuituneError(f"{repo_id}: not a folder, and its config.json is not in the hub cache ({cache}) "
                           f"{why}; download it once with `huggingface-cli download {repo_id} config.json`, "
                           "or give a local model folder")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, "config.json", cache_dir=cache, etag_timeout=10))
    except Exception as e:  # noqa: BLE001 - network, 404, gated: one line either way
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TuituneError(f"{repo_id}: not a folder, not in the hub cache ({cache}), and the hub did not give "
                           f"its config.json ({type(e).__name__}: {why[:160]}); check the id and the network, "
                           "or give a local model folder") from e


def read_model_shape(model_dir: Union[str, Path], online: bool | None = None) -> ModelShape:
    """Read ``MODEL_DIR/config.json`` (or a path to the config file itself, or a hub id's config).

    A hub id that is not a folder here is read from the hub cache, or the hub (``hub_config_path``).
    """
    path = Path(model_dir).expanduser()
    if not path.exists() and looks_like_hub_id(str(model_dir)):
        path = hub_config_path(str(model_dir), online)
    cfg_path = path if path.is_file() else path / "config.json"
    if not path.exists():
        raise TuituneError(f"model folder {path} does not exist: give the folder that holds config.json, "
                           "or a hub id such as Qwen/Qwen2.5-0.5B-Instruct")
    if not cfg_path.is_file():
        raise TuituneError(f"{path} has no config.json: point at a Hugging Face model folder "
                           "(the one with config.json and the *.safetensors files)")
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TuituneError(f"cannot read {cfg_path}: {e}; check the file's permissions or re-download it") from e
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise TuituneError(f"{cfg_path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): "
                           "fix the file or download it again") from e
    return shape_from_config(cfg, source=str(cfg_path))


# --- the estimate -----------------------------------------------------------------------


@dataclass
class Estimate:
    method: str
    max_length: int
    batch_size: int
    gradient_checkpointing: bool
    gpus: int
    deepspeed: Optional[str]
    n_params: int
    trainable_params: int
    parts: dict[str, float]
    total_gib: float
    precision: str = "bf16"
    lora_r: int = 64
    lora_targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    lora_dropout: float = 0.0
    chunked_loss: bool = False
    cpu_gib: float = 0.0
    model: Optional[ModelShape] = None

    def settings(self) -> dict:
        """The keyword arguments that reproduce this estimate with :func:`estimate`."""
        return dict(method=self.method, max_length=self.max_length, batch_size=self.batch_size,
                    gradient_checkpointing=self.gradient_checkpointing, lora_r=self.lora_r,
                    lora_targets=list(self.lora_targets), gpus=self.gpus, deepspeed=self.deepspeed,
                    precision=self.precision, lora_dropout=self.lora_dropout, chunked_loss=self.chunked_loss)

    def to_dict(self) -> dict:
        m = self.model
        model = None
        if m is not None:
            model = {k: getattr(m, k) for k in (
                "architecture", "model_type", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings", "num_experts")}
            model["n_params"] = m.n_params
        return {**self.settings(), "model": model, "n_params": self.n_params,
                "trainable_params": self.trainable_params,
                "parts": {k: round(v, 3) for k, v in self.parts.items()},
                "total_gib": round(self.total_gib, 3), "cpu_gib": round(self.cpu_gib, 3)}


def _norm_targets(targets) -> list[str]:
    if targets is None or targets == "all-linear" or targets == "all":
        return list(ALL_LINEAR)
    if isinstance(targets, str):
        if targets in ("attention", "attn"):
            return ["q", "k", "v", "o"]
        if targets in ("mlp", "ffn"):
            return ["gate", "up", "down"]
        targets = [t for t in targets.replace(";", ",").replace(" ", ",").split(",") if t]
    out: list[str] = []
    for t in targets:
        key = str(t).strip().split(".")[-1].lower()
        name = _TARGET_ALIASES.get(key)
        if name is None:
            raise TuituneError(f"unknown LoRA target module {t!r}: use all-linear or names among "
                               "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
        for n in {"qkv": ["q", "k", "v"], "gate_up": ["gate", "up"]}.get(name, [name]):
            if n not in out:
                out.append(n)
    return out


def estimate(shape: ModelShape, method: str = "lora", max_length: int = 2048, batch_size: int = 1,
             gradient_checkpointing: bool = True, lora_r: int = 64, lora_targets="all-linear",
             gpus: int = 1, deepspeed: Optional[str] = None, precision: str = "bf16",
             lora_dropout: float = 0.0, chunked_loss: bool = False) -> Estimate:
    """Peak GPU memory per GPU for one training step; see the module docstring for the formula."""
    method = str(method).lower()
    if method not in METHODS:
        raise TuituneError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if deepspeed in ("", "none"):
        deepspeed = None
    if deepspeed not in DEEPSPEED:
        raise TuituneError(f"unknown DeepSpeed setting {deepspeed!r}: use none, zero2, zero3, zero2_offload "
                           "or zero3_offload")
    mode = PRECISIONS.get(str(precision).lower())
    if mode is None:
        raise TuituneError(f"unknown precision {precision!r}: use bf16 (mixed), bf16-pure or fp32")
    for name, v in (("max length", max_length), ("batch size", batch_size), ("gpus", gpus)):
        if not isinstance(v, int) or v < 1:
            raise TuituneError(f"{name} must be a whole number of at least 1, got {v!r}")
    if method != "full" and (not isinstance(lora_r, int) or lora_r < 1):
        raise TuituneError(f"LoRA rank must be a whole number of at least 1, got {lora_r!r}")
    targets = _norm_targets(lora_targets)

    P = shape.n_params
    w16 = 4.0 if mode == "fp32" else 2.0  # bytes per weight / activation element
    # Weights
    if method == "qlora":
        weights = shape.linear_params * NF4_BYTES + shape.other_params * w16
    else:
        weights = P * w16
    # Trainable params and their training state
    if method == "full":
        T = P
        if mode == "amp":
            trainable, grads, optim = 4.0 * T, 2.0 * T, 8.0 * T
        elif mode == "pure":
            trainable, grads, optim = 0.0, 2.0 * T, 4.0 * T
        else:
            trainable, grads, optim = 0.0, 4.0 * T, 8.0 * T
    else:
        T = shape.lora_params(lora_r, targets)
        per = 2.0 if mode == "pure" else 4.0
        trainable, grads, optim = per * T, per * T, 2 * per * T

    # Activations
    tokens = batch_size * max_length
    layer = shape.activation_elems_per_token_layer()
    if method != "full":
        layer += shape.lora_activation_elems_per_token_layer(lora_r, targets, lora_dropout > 0)
    h = shape.hidden_size
    outside = 4 * h  # final norm (the embedding saves only the token ids)
    if gradient_checkpointing:
        acts = tokens * w16 * (h * shape.num_layers + layer + outside)
    else:
        acts = tokens * w16 * (layer * shape.num_layers + outside)
    logits = tokens * shape.vocab_size * (LOGIT_BYTES_CHUNKED if chunked_loss else LOGIT_BYTES)
    if mode == "fp32":
        logits = tokens * shape.vocab_size * (8.0 if not chunked_loss else 5.0)

    # Sharding and offload
    cpu = 0.0
    n = gpus
    if deepspeed:
        stage3 = deepspeed.startswith("zero3")
        offload = deepspeed.endswith("_offload")
        if offload:
            cpu += trainable + optim
            trainable = optim = 0.0
        else:
            trainable /= n
            optim /= n
        if offload:
            # Gradient partitions go to CPU too; the GPU keeps a bucket of about one layer's.
            bucket = shape.layer_param_max() * 2.0 if method == "full" else grads
            cpu += grads / n
            grads = min(grads / n, bucket)
        else:
            grads /= n
        if stage3:
            wl = NF4_BYTES if method == "qlora" else w16
            gather = max(2 * shape.layer_param_max() * wl, shape.vocab_size * h * w16)
            if offload:
                cpu += weights
                weights = gather
            else:
                weights = weights / n + gather
    parts = {
        "weights": weights / GIB,
        "trainable": trainable / GIB,
        "gradients": grads / GIB,
        "optimizer": optim / GIB,
        "activations": acts / GIB,
        "logits": logits / GIB,
        "overhead": OVERHEAD_GIB,
    }
    return Estimate(
        method=method, max_length=max_length, batch_size=batch_size,
        gradient_checkpointing=bool(gradient_checkpointing), gpus=gpus, deepspeed=deepspeed,
        n_params=P, trainable_params=int(T), parts=parts, total_gib=sum(parts.values()),
        precision=str(precision), lora_r=lora_r, lora_targets=targets, lora_dropout=lora_dropout,
        chunked_loss=bool(chunked_loss), cpu_gib=cpu / GIB, model=shape,
    )


def estimate_model_dir(model_dir: Union[str, Path], online: bool | None = None, **kwargs) -> Estimate:
    """:func:`estimate` for the model in ``model_dir`` or hub id (reads only its config.json)."""
    return estimate(read_model_shape(model_dir, online), **kwargs)


def estimate_for_config(cfg, online: bool | None = False) -> Estimate:
    """:func:`estimate` for a run config (a ``RunConfig``): its model, a folder or a hub id (from
    the hub cache unless ``online``), with its method, length, batch, checkpointing, LoRA,
    GPUs and DeepSpeed. The one translation of a config into estimate settings."""
    model = cfg.resolve(cfg.model) if cfg.model_is_local() else cfg.model
    return estimate_model_dir(
        model, online=online, method=cfg.method, max_length=cfg.data.max_length,
        batch_size=cfg.training.batch_size, gradient_checkpointing=cfg.training.gradient_checkpointing,
        lora_r=cfg.lora.r, lora_targets=cfg.lora.target_modules, gpus=cfg.distributed.gpus,
        deepspeed=None if cfg.distributed.deepspeed == "none" else cfg.distributed.deepspeed,
        # The estimate is for the GPU box: there auto and the 16-bit choices hold the base in 16 bits.
        precision="fp32" if cfg.training.precision == "fp32" else "bf16")


# --- advice -----------------------------------------------------------------------------


@dataclass
class Advice:
    fits: Optional[bool]
    message: str
    suggestions: list[str] = field(default_factory=list)
    #: The keyword changes behind each suggestion, in the same order (for a UI to apply).
    changes: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _gib(x: float) -> str:
    return f"{x:.1f} GiB"


def _fits(est: Estimate, free: list[float]) -> bool:
    if est.gpus > len(free):
        return False
    return est.total_gib <= min(free[:est.gpus])


def _describe(change: dict, est: Estimate) -> str:
    bits = []
    for k, v in change.items():
        if k == "gradient_checkpointing":
            bits.append("turn on gradient checkpointing")
        elif k == "batch_size":
            acc = max(1, est.batch_size // v)
            bits.append(f"batch size {v} with gradient accumulation x{acc}")
        elif k == "method":
            bits.append(f"use --method {v}")
        elif k == "max_length":
            bits.append(f"max length {v}")
        elif k == "deepspeed":
            gpus = change.get("gpus", est.gpus)
            label = {"zero2": "ZeRO-2", "zero3": "ZeRO-3", "zero2_offload": "ZeRO-2 offload",
                     "zero3_offload": "ZeRO-3 offload"}[v]
            bits.append(f"{gpus} GPUs with {label}" if gpus > 1 else label)
        elif k == "gpus" and "deepspeed" not in change:
            bits.append(f"use the {v} GPU{'s' if v > 1 else ''} here")
    return " + ".join(bits)


def _candidates(est: Estimate, n_free: int) -> list[tuple[int, dict]]:
    """Single changes with a cost: how much they slow training or change what is learned."""
    out: list[tuple[int, dict]] = []
    if not est.gradient_checkpointing:
        out.append((1, {"gradient_checkpointing": True}))  # ~30% slower, same result
    if est.batch_size > 1:
        out.append((1, {"batch_size": 1}))  # same result with gradient accumulation
    if n_free > 1:
        for cost, stage in ((2, "zero2"), (3, "zero3")):
            if est.deepspeed != stage or est.gpus != n_free:
                out.append((cost, {"gpus": n_free, "deepspeed": stage}))
    if est.method == "full":
        out.append((4, {"method": "lora"}))
        out.append((5, {"method": "qlora"}))
    elif est.method == "lora":
        out.append((4, {"method": "qlora"}))
    length, cost = est.max_length // 2, 3
    while length >= 256:  # each halving truncates more of the data
        out.append((cost, {"max_length": length}))
        length, cost = length // 2, cost + 3
    for cost, stage in ((6, "zero2_offload"), (7, "zero3_offload")):  # several times slower
        if est.deepspeed != stage:
            out.append((cost, {"deepspeed": stage, "gpus": n_free if n_free > 1 else est.gpus}))
    return out


def advise(est: Estimate, free_gib: list[float]) -> Advice:
    """Does ``est`` fit in the free memory of these GPUs, and if not, what would?

    ``free_gib`` lists each visible GPU's free memory (empty: no GPU). The run uses
    the first ``est.gpus`` of them. Every suggestion was re-estimated with
    :func:`estimate` and fits. Single changes and pairs of them are ranked by a
    cost (how much slower training gets or how much what is learned changes):
    gradient checkpointing 1, micro batch 1 with accumulation 1, the other GPUs
    with ZeRO-2/ZeRO-3 2/3, full -> LoRA 4, -> QLoRA 4 (5 from full), each
    halving of max length 3 more, CPU offload 6/7; a pair costs the sum.
    At most four suggestions, cheapest first.
    """
    free = [float(f) for f in (free_gib or [])]
    need = est.total_gib
    if not free:
        return Advice(None, f"no GPU here: needs {_gib(need)} on a GPU"
                            + (f" (x{est.gpus})" if est.gpus > 1 else ""))
    if est.gpus > len(free):
        msg = f"needs {est.gpus} GPUs with {_gib(need)} each, found {len(free)}: does not fit"
    else:
        used = free[:est.gpus]
        idx = used.index(min(used))
        ok = need <= used[idx]
        where = f"GPU {idx} has {_gib(used[idx])} free" if est.gpus == 1 else \
            f"the smallest of {est.gpus} GPUs (GPU {idx}) has {_gib(used[idx])} free"
        msg = f"needs {_gib(need)} per GPU, {where}: {'fits' if ok else 'does not fit'}"
        if ok:
            return Advice(True, msg)
    if est.model is None:
        return Advice(False, msg)

    base = est.settings()

    def verified(change: dict) -> Optional[Estimate]:
        try:
            new = estimate(est.model, **{**base, **change})
        except TuituneError:
            return None
        return new if _fits(new, free) else None

    singles = _candidates(est, len(free))
    if est.gpus > len(free):  # first of all, run on the GPUs that are here
        here = {"gpus": len(free)}
        singles = [(0, here)] + [(c, {**here, **ch}) for c, ch in singles if "gpus" not in ch] + \
                  [(c, ch) for c, ch in singles if "gpus" in ch]
    found: list[tuple[int, dict, Estimate]] = []
    alone = set()
    for k, (cost, change) in enumerate(singles):
        new = verified(change)
        if new is not None:
            found.append((cost, change, new))
            alone.add(k)
    for i, (ci, a) in enumerate(singles):
        for j in range(i + 1, len(singles)):
            cj, b = singles[j]
            if i in alone or j in alone or set(a) & set(b) - {"gpus"}:
                continue  # a pair is only worth it when neither half is enough on its own
            new = verified({**a, **b})
            if new is not None:
                found.append((ci + cj, {**a, **b}, new))
    # Drop a change that only adds to another change which fits already.
    found = [f for f in found if not any(g[1].items() < f[1].items() for g in found)]
    found.sort(key=lambda f: f[0])  # stable: singles before pairs of the same cost
    found = [(c, e) for _cost, c, e in found]
    found = found[:4]
    suggestions = [f"{_describe(c, est)} ({_gib(e.total_gib)})" for c, e in found]
    if not found:
        msg += "; no single or paired change makes it fit: use a smaller model or a bigger GPU"
    return Advice(False, msg, suggestions, [c for c, _ in found])

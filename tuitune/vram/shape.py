"""A model's shape (layers, sizes, parameter counts) from its ``config.json`` alone: a local
folder, or what the resolver makes of the name (a hub id's from the hub cache or the hub:
``tuitune.vram.hub``). See ``tuitune.vram``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Union

from tuitune.errors import TuituneError
from tuitune.vram.hub import config_location

ALL_LINEAR = ("q", "k", "v", "o", "gate", "up", "down")

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

    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of the first decoder layer (an MoE layer lists each expert's)."""
        return [(i, o) for _, i, o, m in self._layers()[0][1] for _ in range(m)]

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


def read_model_shape(model_dir: Union[str, Path], online: bool | None = None, workspace=".") -> ModelShape:
    """Read ``MODEL_DIR/config.json`` (or a path to the config file itself, or a hub id's config).

    What is no path here is what ``tuitune.sources.resolve`` makes of it in ``workspace``: a model
    folder there, a run's base model, or a hub id read from the hub cache, or the hub
    (``tuitune.vram.hub``); a missing local path is refused at once, naming the workspace's models.
    """
    path = Path(model_dir).expanduser()
    if not path.exists():
        path = config_location(str(model_dir), workspace, online)
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



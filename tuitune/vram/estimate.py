"""Peak GPU memory per GPU for one training step, from a model's shape (the formula is in
``tuitune.vram``'s docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from tuitune.errors import TuituneError
from tuitune.vram.shape import ALL_LINEAR, ModelShape, read_model_shape

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


def estimate_model_dir(model_dir: Union[str, Path], online: bool | None = None, workspace=".", **kwargs) -> Estimate:
    """:func:`estimate` for the model in ``model_dir``, a hub id or what else the resolver takes in
    ``workspace`` (reads only its config.json)."""
    return estimate(read_model_shape(model_dir, online, workspace), **kwargs)


def estimate_for_config(cfg, online: bool | None = False) -> Estimate:
    """:func:`estimate` for a run config (a ``RunConfig``): its model, a folder or a hub id (from
    the hub cache unless ``online``), with its method, length, batch, checkpointing, LoRA,
    GPUs and DeepSpeed. The one translation of a config into estimate settings.

    The loss: an sft or pretrain run with ``training.kernels`` auto or liger never holds the
    (tokens x vocabulary) logits (Liger's fused linear cross-entropy on a GPU, else tuitune's chunked
    loss: ``tuitune.train.kernels``), so it is counted as ``chunked_loss``; ``kernels: none`` and the
    tasks whose loss TRL computes (dpo, orpo, grpo) hold them whole. For a 7B model with a 152k
    vocabulary at 4 x 2048 tokens that is 3.5 GiB against 11.6."""
    from tuitune.train.kernels import no_full_logits

    model = cfg.resolve(cfg.model) if cfg.model_is_local() else cfg.model
    return estimate_model_dir(
        model, online=online, method=cfg.method, max_length=cfg.data.max_length,
        batch_size=cfg.training.batch_size, gradient_checkpointing=cfg.training.gradient_checkpointing,
        lora_r=cfg.lora.r, lora_targets=cfg.lora.target_modules, gpus=cfg.distributed.gpus,
        deepspeed=None if cfg.distributed.deepspeed == "none" else cfg.distributed.deepspeed,
        # The estimate is for the GPU box: there auto and the 16-bit choices hold the base in 16 bits.
        precision="fp32" if cfg.training.precision == "fp32" else "bf16",
        chunked_loss=no_full_logits(cfg))



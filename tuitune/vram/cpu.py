"""Peak resident memory (RSS) of a training run on a CPU, from the config and the model's shape.

The GPU formula (``tuitune.vram``) counts what a training step holds; on a CPU the same tensors
live in the process's heap, and the process holds more besides:

``runtime``
    Python with torch, transformers, peft, datasets and the tokenizer loaded, and the one-off buffers
    of loading (:data:`RUNTIME_BYTES`, measured: a worker on the tiny model, whose weights are a few MB).
``weights``
    Every parameter in the dtype the base is loaded in (``config.model_dtype``: LoRA's base in the
    resolved precision, fp32 for a full fine-tune).
``training state``
    As on a GPU: LoRA's adapters in fp32 with their gradients and AdamW's m and v (16 B a parameter),
    plus the ``modules_to_save`` copies (embed_tokens, lm_head: one copy where they are tied), 16 B a parameter too.
``activations``, ``logits``
    The GPU formula's, in the compute dtype (4 bytes in fp32). In fp32 the worker keeps freed heap
    for the next step (``reuse_freed_memory``; in bf16 it keeps glibc's defaults), so what a step
    frees still counts: the logits' fp32 pair (logits and log-softmax, the GPU formula's 8 bytes in
    fp32) is held three times over at the peak (with the gradients of the loss's backward:
    :data:`LOGIT_COPIES`).

Calibrated on the probe (``bench/probe.py``; 2-core AVX-512 EPYC, fp32, the longest batch), peak RSS
estimated / measured: the tiny model's tiny-demo 0.68 / 0.64 GiB, its packed 1024-token rows at batch 8
1.07 / 1.08 GiB; SmolLM2-135M's smol-demo (LoRA r16, 4 packed rows of 128) 2.39 / 2.28 GiB (+5%). With the
logits counted 1.5 times the last two read 16% and 7% low. bf16 on a CPU (a 16-bit base) is the same
formula at 2 bytes and was not measured here.
"""

from __future__ import annotations

from tuitune.vram.estimate import estimate
from tuitune.vram.shape import read_model_shape

#: The worker's resident memory before its model counts: interpreter, libraries, tokenizer, allocator.
RUNTIME_BYTES = 620 * 2 ** 20
#: How many times the logits' fp32 pair is held at the peak (see the module docstring).
LOGIT_COPIES = 3.0


def estimate_rss(cfg, tokens: int | None = None) -> float:
    """Bytes: the peak RSS of ``cfg``'s run on this CPU (see the module docstring). ``tokens``: the largest
    micro batch's tokens where they are known (a probe's longest batch; padding-free batches hold fewer
    than ``batch_size x max_length``), else ``batch_size x max_length``."""
    from tuitune.config.arguments import model_dtype

    model = cfg.resolve(cfg.model) if cfg.model_is_local() else cfg.model
    shape = read_model_shape(model, False, cfg.workspace)
    dtype = model_dtype(cfg)
    fp32 = dtype == "float32"
    method = "lora" if cfg.method == "qlora" else cfg.method  # 4-bit is GPU only: the CPU holds the base whole
    est = estimate(shape, method=method, max_length=cfg.data.max_length, batch_size=cfg.training.batch_size,
                   gradient_checkpointing=cfg.training.gradient_checkpointing, lora_r=cfg.lora.r,
                   lora_targets=cfg.lora.target_modules, precision="fp32" if fp32 else "bf16",
                   lora_dropout=cfg.lora.dropout)
    p = est.parts
    gib = float(1 << 30)
    weights = shape.n_params * (4 if fp32 or cfg.method == "full" else 2)
    state = (p["trainable"] + p["gradients"] + p["optimizer"]) * gib
    if cfg.method == "full" and not fp32:
        state = shape.n_params * 12.0  # fp32 weights are the master copy; grads 4, m and v 8
    saved = {m.split(".")[-1] for m in (cfg.lora.modules_to_save if cfg.method != "full" else [])}
    copies = int("embed_tokens" in saved) + int("lm_head" in saved)
    if copies == 2 and shape.tie_word_embeddings:
        copies = 1
    state += copies * shape.vocab_size * shape.hidden_size * 16.0
    scale = tokens / (cfg.training.batch_size * cfg.data.max_length) if tokens else 1.0
    return RUNTIME_BYTES + weights + state + (p["activations"] + p["logits"] * LOGIT_COPIES) * gib * scale

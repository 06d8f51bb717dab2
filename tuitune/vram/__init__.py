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

from tuitune.vram.advice import Advice, advise
from tuitune.vram.estimate import (DEEPSPEED, GIB, LOGIT_BYTES, LOGIT_BYTES_CHUNKED, METHODS, NF4_BYTES, OVERHEAD_GIB,
                                   PRECISIONS, Estimate, estimate, estimate_for_config, estimate_model_dir)
from tuitune.vram.hub import HUB_TIMEOUT_S, hub_cache_dir, hub_config_path, hub_offline, hub_unreachable
from tuitune.vram.shape import ALL_LINEAR, ModelShape, read_model_shape, shape_from_config

__all__ = ["ALL_LINEAR", "DEEPSPEED", "GIB", "LOGIT_BYTES", "LOGIT_BYTES_CHUNKED", "METHODS", "NF4_BYTES",
           "OVERHEAD_GIB", "PRECISIONS", "Advice", "Estimate", "ModelShape", "advise", "estimate",
           "estimate_for_config", "estimate_model_dir", "hub_cache_dir", "hub_config_path", "HUB_TIMEOUT_S",
           "hub_offline", "hub_unreachable", "read_model_shape", "shape_from_config"]

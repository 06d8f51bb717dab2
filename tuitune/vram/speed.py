"""How fast LoRA trains on this CPU: a model's training FLOPs per token (from its shape, as the
memory estimate reads it) over the throughput of its layers' matmuls, timed here in a fraction of
a second. The Environment step's cpu row says it for the demo's real model, and a 7B one.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuitune.vram.shape import shape_from_config

#: The demo's real model, SmolLM2-135M-Instruct (`tuitune demo --real`): the architecture fields of its
#: config.json, so that the cpu row can say how fast it trains here before it is downloaded.
DEMO_REAL_MODEL = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
                   "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                   "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True}


@dataclass
class CpuRate:
    precision: str
    gflops: float           # one decoder layer's matmuls, forward and input gradient, timed here
    flops_per_token: float  # LoRA training of the demo's real model
    tokens_per_s: float
    tokens_per_s_7b: float


def lora_flops_per_token(shape, length: int) -> float:
    """Training FLOPs per token of LoRA on a frozen base of ``shape`` at sequence ``length``.

    Each weight's matmul costs 2 FLOPs in the forward and 2 in the backward for its input's
    gradient (a frozen weight gets none of its own); the decoder's linears and the lm_head count.
    Causal attention adds 2*s*h per layer in the forward on average (scores and mix over s/2 earlier
    tokens) and twice that in the backward. LoRA's own rank-r matmuls are left out (under 3% at r=16).
    """
    linear = shape.linear_params + shape.hidden_size * shape.vocab_size
    return 4.0 * linear + 6.0 * length * shape.hidden_size * shape.num_layers


def time_layer_matmuls(shape, precision: str, tokens: int = 128, budget_s: float = 0.25) -> float:
    """GFLOP/s of one decoder layer's matmuls of ``shape`` (each forward and its input gradient) on
    ``tokens`` tokens in ``precision``, the best of the repeats that fit in ``budget_s`` after a warm-up."""
    import torch

    from tuitune.hardware import torch_dtype

    dtype, gen = torch_dtype(precision), torch.Generator().manual_seed(0)
    linears = shape.layer_linears()
    inputs = {i: torch.randn(tokens, i, generator=gen).to(dtype) for i in {i for i, _ in linears}}
    weights = [torch.randn(i, o, generator=gen).to(dtype) for i, o in linears]

    def step() -> None:
        for w in weights:
            out = inputs[w.shape[0]] @ w
            out @ w.T  # the backward's gradient of the input

    return sum(4.0 * tokens * i * o for i, o in linears) / best_seconds(step, budget_s) / 1e9


def best_seconds(step, budget_s: float) -> float:
    """The shortest time of ``step()`` over the repeats that fit in ``budget_s``, after one warm-up
    call (oneDNN picks its kernels there): load elsewhere only ever slows a repeat down."""
    import time

    step()
    best, start = float("inf"), time.perf_counter()
    while True:
        t = time.perf_counter()
        step()
        now = time.perf_counter()
        best = min(best, now - t)
        if now - start > budget_s:
            return best


def cpu_lora_rate(precision: str, length: int = 128) -> CpuRate:
    """How fast LoRA trains the demo's real model on this CPU in ``precision``: an estimate, from the
    model's FLOPs per token at sequence ``length`` and its layers' matmuls timed here (~0.3 s).

    It leaves out what is not a matmul (norms, activations, the optimizer) and the larger matmuls
    of a real batch (4 x 128 tokens, which run faster): on the 2-core EPYC (AVX-512 bf16) of issue
    20 it said 226 tokens/s in bf16 where the smol-demo run measured 235 alone.
    """
    shape = shape_from_config(DEMO_REAL_MODEL)
    gflops = time_layer_matmuls(shape, precision)
    per_token = lora_flops_per_token(shape, length)
    return CpuRate(precision, gflops, per_token, gflops * 1e9 / per_token, gflops * 1e9 / (4.0 * 7e9))

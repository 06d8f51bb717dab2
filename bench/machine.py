"""The machine is part of a bench's result (issue 22, goal 5): what the training benches print first.

    python bench/machine.py          # the lines alone, with SmolLM2's GEMM peaks (a few seconds)

The CPU's model and the flags that decide its matmul speed, its cores and torch's threads, what
``precision: auto`` picks here and why (``tuitune.hardware.auto_precision``, the one place that
decides it), and the GEMM peak of this box at a model's own shapes in bf16 and fp32: one decoder
layer's matmuls (each forward and its input gradient) on a batch's tokens, timed with
``tuitune.vram.speed.time_layer_matmuls`` (the Environment step's estimate of training speed uses
the same timing), plus the head's. A bench divides its useful FLOPs per second by the peak of the
precision ``auto`` picks: that is its MFU (model FLOPs utilisation).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

#: The CPU flags that decide how fast a matmul runs (AVX2/FMA; AVX-512; bf16 in AVX-512 or AMX).
MATMUL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def matmul_flags() -> list[str]:
    from tuitune.hardware import cpu_flags

    flags = cpu_flags()  # what precision: auto reads
    return [f for f in MATMUL_FLAGS if f in flags]


@dataclass
class Peaks:
    bf16: float  # GFLOP/s
    fp32: float

    def of(self, precision: str) -> float:
        return self.bf16 if precision == "bf16" else self.fp32


def gemm_peaks(shape, tokens: int, budget_s: float = 0.6) -> Peaks:
    """GFLOP/s of ``shape``'s layer matmuls plus its head on ``tokens`` tokens, in bf16 and fp32.

    The layer's linears at the batch's token count (``time_layer_matmuls``), and the head at a
    quarter of them (about the labelled share a chat row has): the FLOP-weighted rate of the mix,
    which is what a training step's matmuls can reach here at best.
    """
    from tuitune.vram.speed import time_layer_matmuls

    rows = max(64, tokens // 4)
    f_layer = sum(4.0 * tokens * i * o for i, o in shape.layer_linears()) * shape.num_layers
    f_head = 4.0 * rows * shape.hidden_size * shape.vocab_size
    out = {}
    for precision in ("bf16", "fp32"):
        layer = time_layer_matmuls(shape, precision, tokens=tokens, budget_s=budget_s)
        head = _head_gflops(shape, precision, rows, budget_s / 2)
        out[precision] = (f_layer + f_head) / (f_layer / layer + f_head / head)
    return Peaks(out["bf16"], out["fp32"])


def _head_gflops(shape, precision: str, rows: int, budget_s: float) -> float:
    """GFLOP/s of the head's matmul on ``rows`` positions, forward and input gradient."""
    import torch

    from tuitune.hardware import torch_dtype
    from tuitune.vram.speed import best_seconds

    gen = torch.Generator().manual_seed(0)
    dt = torch_dtype(precision)
    x = torch.randn(rows, shape.hidden_size, generator=gen).to(dt)
    w = torch.randn(shape.vocab_size, shape.hidden_size, generator=gen).to(dt)

    def step():
        g = x @ w.T
        g @ w  # the input's gradient

    return 4.0 * rows * shape.hidden_size * shape.vocab_size / best_seconds(step, budget_s) / 1e9


def useful_flops_per_token(shape, length: float, label_frac: float, r: int = 0) -> float:
    """The model work a LoRA step must do per real token, whatever does it (issue 22's count).

    The frozen base's forward and input gradients (``lora_flops_per_token`` without its head),
    the head's forward and input gradient on the labelled share of tokens only (a head run on
    prompt tokens is work no loss needs), and LoRA's own matmuls at rank ``r`` on every linear
    (forward, input gradient and weight gradient: 6 FLOPs per parameter). Gradient
    checkpointing's second forward is not counted: it is a cost, not work.
    """
    from tuitune.vram.speed import lora_flops_per_token

    head = shape.hidden_size * shape.vocab_size
    base = lora_flops_per_token(shape, int(length)) - 4.0 * head
    lora = 6.0 * r * sum(i + o for i, o in shape.layer_linears()) * shape.num_layers
    return base + 4.0 * head * label_frac + lora


def describe(shape=None, tokens: int = 2048) -> tuple[list[str], Peaks | None, str]:
    """The lines a bench prints about this box; the peaks at ``shape`` (None: no shape, no timing);
    the precision ``auto`` picks here."""
    import torch

    from tuitune.cores import cpu_cores
    from tuitune.hardware import auto_precision, cpu_model

    precision, why = auto_precision()
    flags = " ".join(matmul_flags()) or "none of " + " ".join(MATMUL_FLAGS)
    lines = [f"cpu: {cpu_model()}, {cpu_cores()} cores (torch's count), flags: {flags}",
             f"precision: auto -> {precision} ({why}); torch {torch.__version__.split('+')[0]}, "
             f"{torch.get_num_threads()} threads; Python {sys.version.split()[0]}"]
    peaks = None
    if shape is not None:
        peaks = gemm_peaks(shape, tokens)
        lines.append(f"GEMM peak at the model's shapes ({tokens} tokens a batch, layer matmuls and head, "
                     f"forward and input gradient): bf16 {peaks.bf16:.0f} GFLOP/s, fp32 {peaks.fp32:.0f} GFLOP/s")
    return lines, peaks, precision


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tuitune.vram.speed import DEMO_REAL_MODEL
    from tuitune.vram.shape import shape_from_config

    print("\n".join(describe(shape_from_config(DEMO_REAL_MODEL))[0]))

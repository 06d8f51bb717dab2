"""The chunked loss of ``training.kernels: auto`` where Liger does not run (:mod:`tuitune.train.kernels`).

The model runs without its head (``logits_to_keep`` empty) and hands back its
last hidden state; the head and the cross-entropy then run on ``CHUNK_ROWS`` positions at a time,
each chunk's gradients (towards the hidden state, and the head's own trainable weights) computed
right away and kept, its logits dropped. No (positions x vocabulary) tensor exists at once, and
nothing is computed twice. Each chunk is the plain path's own math (the head module's forward,
``.float()``, ``cross_entropy`` with ignore index -100, the derivative by autograd), so the loss
and every gradient equal the plain path's (``tests/test_loss_chunked.py``).

Written here because no library does it on a CPU: Liger and cut-cross-entropy are Triton
kernels (CUDA only). torch 2.13's ``F.linear_cross_entropy(options=LinearCrossEntropyOptions())``
is the same idea and was tried first. Timed on SmolLM2's head (1000 positions, 576 x 49152, the
best of 4, this 2-core EPYC, loaded), against the plain head and loss: on float32 it takes 0.9-1.0x
and this 1.1x; on bfloat16 (what ``precision: auto`` picks on a CPU with AVX-512 bf16) it takes
1.4-1.6x (it copies the head to float32 and multiplies in float32) and this 1.05-1.1x, and it
returns the loss in bfloat16, so the logged loss would move in steps of 2^-6 near 2. It also
takes a weight, not the head module, so LoRA on ``lm_head`` or peft's ``modules_to_save`` copy
(with its dtype hooks) would need unwrapping, and it needs torch 2.13 (we allow 2.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuitune.encode import IGNORE_INDEX

#: Positions per chunk. A chunk's logits are ``CHUNK_ROWS x vocabulary`` float32 (50 MB for
#: SmolLM2's 49152, 155 MB for Qwen's 151936), against ``positions x vocabulary`` (for 16 x 128
#: tokens with half of them labelled, 200 MB and 620 MB). Each chunk reads the head's weight
#: again: against the plain head (same timing as below), 128 rows took 1.09x (bf16) and 1.3x
#: (fp32), 256 rows 1.03x and 1.2x, 512 rows 1.01x and 1.09x.
CHUNK_ROWS = 256

#: The last chunk is filled to a multiple of this many rows (rows without a label: no loss, no
#: gradient), so the head's matmul takes 4 shapes rather than one per batch. oneDNN (a CPU's bf16
#: matmuls) builds and caches its kernels per shape, each with its own copy of the head's weight
#: laid out for it; with a new shape each batch the worker grew step after step. bench/train.py
#: --model real --group matched --rounds 1 (SmolLM2, batch 16, cutoff 128, bf16, 20 steps, 2-core EPYC
#: with AVX-512 bf16, quiet): peak RSS 2,780 -> 2,442 MB, 218 -> 224 tokens/s (the Trainer script:
#: 2,247-2,288 MB). Capping oneDNN's cache instead (ONEDNN_PRIMITIVE_CACHE_CAPACITY=8) gave 2,060 MB
#: at 160 tokens/s; padding the flattened row's width to a multiple of 64 changed nothing (2,966 MB).
ROUND_ROWS = 64

#: Model types whose causal-LM forward is ``lm_head(last_hidden_state[:, logits_to_keep])`` and
#: then the library's cross-entropy, with nothing between (no soft-capping as in Gemma 2/3, no
#: logit scale as in Cohere or Granite, no router loss as in the mixtures of experts): for these
#: the chunked loss is the model's own. Other types keep the plain path.
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "ministral", "qwen2", "qwen3", "phi", "phi3", "gemma", "olmo",
                              "olmo2", "smollm3", "glm4", "starcoder2", "stablelm"})


def chunkable_head(base):
    """The output head of the transformers model ``base`` where the chunked loss is the model's own
    loss, else None (another model type, or DeepSpeed ZeRO-3's partitioned weights, which only
    exist inside the module's forward)."""
    if getattr(getattr(base, "config", None), "model_type", None) not in PLAIN_HEAD_TYPES:
        return None
    head = base.get_output_embeddings()
    if head is None or any(hasattr(p, "ds_id") for p in head.parameters()):
        return None
    return head


def chunked_cross_entropy(hidden, targets, head, rows: int = CHUNK_ROWS):
    """``cross_entropy(head(hidden).float(), targets, reduction="sum", ignore_index=-100)`` in float32,
    ``rows`` positions at a time (``hidden``: positions x hidden size; ``targets``: positions)."""
    params = [p for p in head.parameters() if p.requires_grad]
    return ChunkedHeadLoss.apply(hidden, targets, head, rows, *params)


class ChunkedHeadLoss(torch.autograd.Function):
    """The head and the loss chunk by chunk, the gradients computed in the forward (as Liger's
    fused linear cross-entropy does) and scaled by the loss's gradient in the backward."""

    @staticmethod
    def forward(ctx, hidden, targets, head, rows, *params):
        need_hidden = ctx.needs_input_grad[0]
        wants = need_hidden or any(ctx.needs_input_grad[4:])
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grads = [torch.zeros_like(p) for p in params] if wants else []
        for start in range(0, hidden.shape[0], rows):
            target = targets[start:start + rows]
            if not bool((target != IGNORE_INDEX).any()):
                continue  # no label here: adds nothing to the loss or the gradients
            part = hidden[start:start + rows].detach()
            n, tail = part.shape[0], -part.shape[0] % ROUND_ROWS
            if tail:  # rows without a label to a multiple of ROUND_ROWS: the head sees a few shapes (CHUNK_ROWS)
                part = torch.cat([part, part.new_zeros(tail, part.shape[1])])
                target = torch.cat([target, target.new_full((tail,), IGNORE_INDEX)])
            with torch.set_grad_enabled(wants):
                h = part.requires_grad_(need_hidden)
                loss = F.cross_entropy(head(h).float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
                if wants:
                    got = torch.autograd.grad(loss, ([h] if need_hidden else []) + list(params), allow_unused=True)
                    if need_hidden:
                        grad_hidden[start:start + n] = got[0][:n]
                    for acc, g in zip(grads, got[int(need_hidden):]):
                        if g is not None:  # a parameter of the head that this forward leaves out
                            acc.add_(g)
            total += loss.detach()
        ctx.need_hidden, ctx.used = need_hidden, False
        ctx.save_for_backward(*([grad_hidden] if need_hidden else []), *grads)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        # Scaled in place: the buffers are as large as the head's weight where the head trains
        # (its own gradient), and a copy would double that. So one backward only, as Liger's.
        if ctx.used:
            raise RuntimeError("the chunked loss takes one backward (its gradients were scaled in place); "
                               "do not call backward on it twice")
        ctx.used = True
        saved = [g.mul_(grad_total) for g in ctx.saved_tensors]
        grad_hidden = saved.pop(0) if ctx.need_hidden else None
        return (grad_hidden, None, None, None, *saved)

"""Attention over packed rows, one sample at a time, for models on ``sdpa``.

A packed row holds several samples; ``position_ids`` restart at 0 where each begins. With
flash-attention, transformers runs variable-length attention from those positions. With
``sdpa`` (the default, and the only choice on a CPU or where flash-attn is not installed)
it builds a block-diagonal mask instead, and SDPA then computes every block of the
row x row score matrix, the masked ones too, with no causal fast path: on rows of a few
samples most of that work is thrown away. No library offers variable-length attention
without flash-attn, so this module does the simplest exact thing by hand: it cuts the row
at the sample boundaries and runs transformers' own SDPA attention on each sample with
``is_causal`` (the flash/causal kernels of torch's SDPA). The result equals the masked
computation; only the wasted blocks are skipped.

``install()`` puts it in transformers' attention registry under ``sdpa`` (for this
process only: the training worker). Anything that is not a packed training forward (no
``position_ids`` restarts, a KV cache, a single query token) goes to transformers'
``sdpa`` unchanged.
"""

from __future__ import annotations

_installed = False
#: (position_ids, its segments) of the last packed forward: every layer gets the same tensor,
#: so the boundaries are found once per forward (on a GPU, ``tolist`` waits for the device).
_last: tuple = (None, None)


def _segments(position_ids) -> list[list[tuple[int, int]]] | None:
    """Per row, the (start, end) of each sample, or None when no row holds more than one."""
    import torch

    pos = position_ids
    first = pos[:, :1] - 1
    starts = torch.diff(pos, prepend=first, dim=-1) != 1  # the sample-boundary rule transformers uses
    if not bool(starts[:, 1:].any()):
        return None
    length = pos.shape[1]
    rows = []
    for row in starts.tolist():
        cut = [i for i, s in enumerate(row) if s or i == 0]
        rows.append(list(zip(cut, cut[1:] + [length])))
    return rows


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          is_causal=None, **kwargs):
    """transformers' ``sdpa`` attention, but one sample at a time on packed rows."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    q_len, kv_len = query.shape[2], key.shape[2]
    segments = None
    if (position_ids is not None and q_len == kv_len and q_len > 1 and position_ids.dim() == 2
            and position_ids.shape[-1] == q_len and getattr(module, "is_causal", True) and is_causal is not False):
        global _last
        if _last[0] is not position_ids:
            _last = (position_ids, _segments(position_ids))
        segments = _last[1]
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    # unbind + split, not slicing: the backward of a slice zero-fills a tensor the size of the
    # whole input for every sample, the backward of split is one concatenation.
    rows = []
    for row, q, k, v in zip(segments, query.unbind(0), key.unbind(0), value.unbind(0)):
        sizes = [e - s for s, e in row]
        parts = [sdpa_attention_forward(module, qs.unsqueeze(0), ks.unsqueeze(0), vs.unsqueeze(0), None,
                                        dropout=dropout, scaling=scaling, is_causal=True)[0]
                 for qs, ks, vs in zip(q.split(sizes, dim=1), k.split(sizes, dim=1), v.split(sizes, dim=1))]
        rows.append(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
    return torch.cat(rows, dim=0), None


def install() -> None:
    """Route ``sdpa`` attention through ``packed_sdpa_attention`` in this process."""
    global _installed
    if _installed:
        return
    from transformers import AttentionInterface

    AttentionInterface.register("sdpa", packed_sdpa_attention)
    _installed = True

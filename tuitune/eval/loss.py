"""Held-out loss per record: the training encoding and mask, one forward pass per batch.

Each record is encoded exactly as training encodes it (:func:`tuitune.encode.encode_conversation`
with the run's template, system prompt, ``max_length`` and task), so the loss is over the
answer tokens (every token for ``pretrain``). The per-token cross-entropy is summed per
record here, not by the model's own loss, which averages over the batch: the report needs
each record's loss (which record got better) and the mean over all answer tokens, which is
the training loss's definition. Batches hold up to ``TOKENS_PER_BATCH`` tokens (sorted by
length, right padding), which bounds the logits' memory (tokens x vocabulary floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tuitune.errors import TuituneError

TOKENS_PER_BATCH = 4096
IGNORE_INDEX = -100


@dataclass
class RecordLoss:
    loss_sum: float      # summed cross-entropy over the record's trained tokens
    tokens: int          # trained tokens

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.tokens if self.tokens else None


def encode_records(tokenizer, records: list[dict], *, template: str, system: str | None, max_length: int,
                   task: str) -> list[dict]:
    from tuitune.data.records import with_system
    from tuitune.encode import encode_conversation

    return [encode_conversation(tokenizer, with_system(r, system), template, max_length, task=task) for r in records]


def encode_pair_sides(tokenizer, records: list[dict], *, template: str, system: str | None,
                      max_length: int) -> list[dict]:
    """Each pair as two records, chosen then rejected: the prompt masked, the answer labelled, as
    DPO scores them (:func:`tuitune.encode.encode_preference`), so a record's summed loss is minus
    the log-probability of that answer."""
    from tuitune.data.preference import with_system
    from tuitune.encode import encode_preference

    out = []
    for rec in records:
        rec = with_system(rec, system)
        enc = encode_preference(tokenizer, rec, template, max_length) or \
            encode_preference(tokenizer, rec, template, 0)   # a prompt past max_length: scored whole
        for side in ("chosen_ids", "rejected_ids"):
            ids = enc["prompt_ids"] + enc[side]
            out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * len(enc["prompt_ids"]) + enc[side]})
    return out


def pair_scores(losses: list[RecordLoss]) -> list[dict]:
    """Per pair (from :func:`encode_pair_sides`' order): the summed log-probability of the chosen and
    the rejected answer, and the margin between them (positive: the model prefers the chosen one)."""
    out = []
    for c, r in zip(losses[0::2], losses[1::2]):
        out.append({"chosen_logp": -c.loss_sum, "rejected_logp": -r.loss_sum, "margin": r.loss_sum - c.loss_sum,
                    "chosen_tokens": c.tokens, "rejected_tokens": r.tokens})
    return out


def batches(encoded: list[dict], pad_id: int, tokens_per_batch: int = TOKENS_PER_BATCH):
    """``(indices, input_ids, labels, attention_mask)`` batches: records sorted by length, as many of
    the next ones as fit ``tokens_per_batch`` (at least one), right-padded."""
    import torch

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(encoded[order[end]]["input_ids"]) <= tokens_per_batch:
            end += 1
        idx = order[start:end]
        width = max(len(encoded[i]["input_ids"]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(encoded[i]["input_ids"])
            ids[row, :n] = torch.tensor(encoded[i]["input_ids"])
            labels[row, :n] = torch.tensor(encoded[i]["labels"])
            mask[row, :n] = 1
        yield idx, ids, labels, mask
        start = end


def record_losses(model, encoded: list[dict], *, pad_id: int, tokens_per_batch: int = TOKENS_PER_BATCH,
                  prepare: Callable | None = None, on_batch: Callable[[int], None] | None = None,
                  cancelled: Callable[[], bool] | None = None) -> list[RecordLoss]:
    """Each record's summed loss and trained-token count, in ``encoded``'s order."""
    from contextlib import nullcontext

    import torch
    import torch.nn.functional as F

    out: list[RecordLoss | None] = [None] * len(encoded)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    done = 0
    try:
        for idx, ids, labels, mask in batches(encoded, pad_id, tokens_per_batch):
            if cancelled is not None and cancelled():
                raise TuituneError("cancelled")
            ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
            with torch.no_grad(), (prepare() if prepare else nullcontext()):
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                target = labels[:, 1:]
                ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="none").view(target.shape)
            sums = ce.sum(dim=1).tolist()
            counts = (target != IGNORE_INDEX).sum(dim=1).tolist()
            for row, i in enumerate(idx):
                out[i] = RecordLoss(float(sums[row]), int(counts[row]))
            done += len(idx)
            if on_batch is not None:
                on_batch(done)
    finally:
        if was_training:
            model.train()
    return out  # type: ignore[return-value]


def mean_loss(losses: list[RecordLoss]) -> float | None:
    """Over all trained tokens (as training's loss), not the mean of the records' means."""
    tokens = sum(r.tokens for r in losses)
    return sum(r.loss_sum for r in losses) / tokens if tokens else None


__all__ = ["RecordLoss", "encode_records", "batches", "record_losses", "mean_loss", "TOKENS_PER_BATCH"]

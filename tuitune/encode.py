"""Conversation → ``input_ids`` + ``labels``; packing to ``max_length``.

Only assistant outputs and the end-of-turn token that closes each are trained
(labels = ids); everything else is ``-100``. Every assistant turn of a multi-turn
record is trained. Pretraining text is trained on all tokens. Each template segment is
tokenized on its own, as XTuner does, so the boundaries between masked and trained
tokens are exact.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Iterator, Sequence

from tuitune.data.records import conversation_of
from tuitune.errors import TuituneError

IGNORE_INDEX = -100


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def encode_conversation(tokenizer, record: dict, template: str, max_length: int, task: str = "sft") -> dict:
    """``record`` (``{"conversation": [...]}``) → ``{"input_ids", "labels"}``, cut to ``max_length``."""
    from tuitune.templates import bos_ids, eos_ids, segments

    if max_length is not None and max_length < 0:
        raise TuituneError(f"max_length {max_length}: must be positive (0 or None: no truncation)")
    try:  # a dict, or the Mapping that datasets.map passes
        turns = record["conversation"]
    except (KeyError, TypeError):
        turns = None
    if not turns:
        raise TuituneError("record has no \"conversation\" turns")
    ids: list[int] = []
    labels: list[int] = []
    if task == "pretrain":
        text = "".join((t.get("input") or "") + (t.get("output") or "") for t in turns)
        ids = bos_ids(tokenizer) + _encode(tokenizer, text) + eos_ids(tokenizer, template)
        labels = list(ids)
    elif task == "sft":
        for seg in segments(tokenizer, template, turns):
            piece = seg.ids if seg.ids is not None else _encode(tokenizer, seg.text)
            ids += piece
            labels += piece if seg.trained else [IGNORE_INDEX] * len(piece)
    else:
        raise TuituneError(f"task {task!r}: choose sft or pretrain")
    if max_length and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def encode_preference(tokenizer, record: dict, template: str, max_length: int) -> dict | None:
    """A preference pair → ``{"prompt_ids", "chosen_ids", "rejected_ids"}``, or None when the prompt
    alone fills ``max_length`` (nothing of the answers would be left to compare).

    Each side is the conversation (earlier turns, prompt, answer) encoded exactly as SFT encodes it,
    so the template, its segments and the end-of-turn token are the ones chat uses; the prompt is
    everything before the last answer (earlier answers are context here, not trained) and the
    completion is the last answer's trained tokens. TRL's own tokenization would apply the
    tokenizer's chat template, which for a named template is a second rendering of it.
    """
    sides = []
    for key in ("chosen", "rejected"):
        enc = encode_conversation(tokenizer, conversation_of(record, record[key]), template, 0)
        ids, labels = enc["input_ids"], enc["labels"]
        end = len(labels)
        while end and labels[end - 1] == IGNORE_INDEX:   # a separator after the answer is not part of it
            end -= 1
        start = end
        while start and labels[start - 1] != IGNORE_INDEX:
            start -= 1
        sides.append((ids[:start], ids[start:end]))
    (prompt, chosen), (prompt_r, rejected) = sides
    if prompt != prompt_r:  # segments are tokenized apart, so the shared context encodes the same
        raise TuituneError("the chosen and rejected sides encode different prompts")
    if max_length:
        if len(prompt) >= max_length:
            return None
        room = max_length - len(prompt)
        chosen, rejected = chosen[:room], rejected[:room]
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def pack_bins(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Group sample indices into rows of at most ``max_length`` tokens, best fit decreasing.

    Longest samples first, each into the fullest row it still fits (else a new row). On
    chat data, where most samples are far shorter than ``max_length``, rows come out ~99%
    full; filling rows in data order leaves a row's tail empty whenever the next sample does
    not fit. Written here because datasets has no packing and TRL (which has one) is not a
    dependency. Spaces are integers up to ``max_length``, so a sorted list of the distinct
    free spaces is short and each step is a bisect.
    """
    if max_length < 1:
        raise TuituneError(f"max_length {max_length}: must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep data order
    bins: list[list[int]] = []
    rows_with_space: dict[int, list[int]] = {}  # free space -> rows with exactly that much free
    spaces: list[int] = []  # the keys of rows_with_space, sorted
    for i in order:
        n = min(int(lengths[i]), max_length)
        if n <= 0:
            continue
        k = bisect.bisect_left(spaces, n)
        if k < len(spaces):
            free = spaces[k]
            row = rows_with_space[free].pop()
            if not rows_with_space[free]:
                del rows_with_space[free], spaces[k]
        else:
            free, row = max_length, len(bins)
            bins.append([])
        bins[row].append(i)
        left = free - n
        if left > 0:
            if left not in rows_with_space:
                rows_with_space[left] = []
                bisect.insort(spaces, left)
            rows_with_space[left].append(row)
    return bins


def pack_row(samples: Iterable[dict], max_length: int) -> dict:
    """Concatenate ``samples`` (that fit in ``max_length`` together) into one training row.

    ``position_ids`` restart at 0 for each sample; transformers reads them as sample
    boundaries (a row without an attention mask gets a block-causal mask, flash-attention
    gets variable-length attention), so no sample attends to another. The first label of
    each sample is masked, so no sample learns to predict the next one's first token.
    """
    row = {"input_ids": [], "labels": [], "position_ids": []}
    for s in samples:
        ids, labels = list(s["input_ids"])[:max_length], list(s["labels"])[:max_length]
        if not ids:
            continue
        labels[0] = IGNORE_INDEX
        row["input_ids"] += ids
        row["labels"] += labels
        row["position_ids"] += list(range(len(ids)))
    return row


def pack(samples: Sequence[dict], max_length: int) -> Iterator[dict]:
    """Pack ``samples`` into rows of at most ``max_length`` tokens (see ``pack_bins``).

    A sample is never split; a longer one is truncated.
    """
    samples = list(samples)
    for row in pack_bins([len(s["input_ids"]) for s in samples], max_length):
        yield pack_row((samples[i] for i in row), max_length)


def token_spans(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Consecutive tokens grouped by trained/masked and decoded: a readable view of a sample."""
    out: list[tuple[str, bool]] = []
    run: list[int] = []
    flag = None
    for i, lab in zip(input_ids, labels):
        trained = lab != IGNORE_INDEX
        if flag is not None and trained != flag:
            out.append((tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False), flag))
            run = []
        run.append(i)
        flag = trained
    if run:
        out.append((tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False), flag))
    return out

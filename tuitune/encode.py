"""Conversation → ``input_ids`` + ``labels``; packing to ``max_length``.

Only assistant outputs and the end-of-turn token that closes each are trained
(labels = ids); everything else is ``-100``. Every assistant turn of a multi-turn
record is trained. Pretraining text is trained on all tokens. Each template segment is
tokenized on its own, as XTuner does, so the boundaries between masked and trained
tokens are exact.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from tuitune.errors import TuituneError

IGNORE_INDEX = -100


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def encode_conversation(tokenizer, record: dict, template: str, max_length: int, task: str = "sft") -> dict:
    """``record`` (``{"conversation": [...]}``) → ``{"input_ids", "labels"}``, cut to ``max_length``."""
    from tuitune.templates import _bos_ids, _eos_ids, segments

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
        ids = _bos_ids(tokenizer) + _encode(tokenizer, text) + _eos_ids(tokenizer, template)
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


def pack(samples: Iterable[dict], max_length: int) -> Iterator[dict]:
    """Concatenate samples greedily into sequences of at most ``max_length`` tokens.

    ``position_ids`` restart at 0 for each sample, so attention implementations that
    read them (flash-attention 2 through transformers) keep attention within a sample.
    The first label of each sample is masked, so no sample learns to predict the next
    one's first token. A sample is never split; a longer one is truncated.
    """
    if max_length < 1:
        raise TuituneError(f"max_length {max_length}: must be at least 1")
    buf = {"input_ids": [], "labels": [], "position_ids": []}
    for s in samples:
        ids, labels = list(s["input_ids"])[:max_length], list(s["labels"])[:max_length]
        if not ids:
            continue
        if buf["input_ids"] and len(buf["input_ids"]) + len(ids) > max_length:
            yield buf
            buf = {"input_ids": [], "labels": [], "position_ids": []}
        labels[0] = IGNORE_INDEX
        buf["input_ids"] += ids
        buf["labels"] += labels
        buf["position_ids"] += list(range(len(ids)))
    if buf["input_ids"]:
        yield buf


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

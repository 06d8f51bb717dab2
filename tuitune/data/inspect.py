"""``inspect``: validate a record file and show how a template tokenizes it: a conversation's trained
and masked tokens, a preference pair's two sides, a prompt record's prompt as the model sees it."""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuitune.data.records import PREFERENCE_TASKS, PROMPT_TASKS, is_preference, is_prompt_record, task_mismatch
from tuitune.errors import FIELD, TuituneError


@dataclass
class InspectResult:
    path: str
    model: str
    template: str
    task: str
    max_length: int
    records: int
    min: int
    median: float
    p95: int
    max: int
    truncated: int
    record: int
    record_where: str
    record_tokens: int
    record_trained: int
    spans: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: A preference pair: ``spans`` are the chosen side's, these the rejected side's (same prompt).
    rejected_spans: list[tuple[str, bool]] | None = None
    #: A prompt record (grpo): ``spans`` are its prompt as rendered for generation; this is its reference.
    answer: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"file: {self.path}: {self.records} records, all valid",
            f"template: {self.template}   task: {self.task}   max_length: {self.max_length}",
            *(f"note: {n}" for n in self.notes),
            f"tokens per record: min {self.min}, median {self.median:g}, p95 {self.p95}, max {self.max}",
            f"truncated at {self.max_length}: {self.truncated} of {self.records} records" if self.task not in
            PROMPT_TASKS else f"prompts of {self.max_length} tokens or more (training skips them): {self.truncated} "
                              f"of {self.records}",
        ]


def load_tokenizer(model_dir: str | os.PathLike):
    """The tokenizer of the model folder ``model_dir`` (a folder only: inspect reads no hub ids), by the one loader."""
    from tuitune.loading import load_tokenizer as load

    p = Path(model_dir)
    if not p.exists():
        raise TuituneError(f"{p}: model folder not found")
    return load(p, fix="give a model folder with tokenizer files")


def default_template(tokenizer) -> str:
    return "auto" if getattr(tokenizer, "chat_template", None) else "default"


def guess_task(records: list[dict]) -> str:
    """``dpo`` for preference pairs; ``grpo`` for prompt records; ``pretrain`` when every record is bare
    text (one turn, no input, no system); else ``sft``."""
    if records and is_preference(records[0]):
        return "dpo"
    if records and is_prompt_record(records[0]):
        return "grpo"
    for r in records:
        c = r["conversation"]
        if len(c) != 1 or (c[0].get("input") or "").strip() or c[0].get("system"):
            return "sft"
    return "pretrain"


def _percentile(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    k = max(0, min(len(sorted_vals) - 1, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def inspect_file(path: str | os.PathLike, model: str | os.PathLike, template: str | None = None,
                 max_length: int = 2048, record: int = 1, task: str | None = None, tokenizer=None) -> InspectResult:
    """Validate ``path``, measure token lengths, and render record ``record`` (1-based)."""
    from tuitune.data.io import iter_records
    from tuitune.encode import encode_conversation, token_spans
    from tuitune.templates import get_template

    path = Path(path)
    pairs = list(iter_records(path))
    if not pairs:
        raise TuituneError(f"{path}: no records")
    if not 1 <= record <= len(pairs):
        raise TuituneError(f"{FIELD} {record}: the file has records 1 to {len(pairs)}", field="record")
    tok = tokenizer or load_tokenizer(model)
    notes = []
    if template is None:
        template = default_template(tok)
        notes.append(f"template {template!r} chosen" + (" (the tokenizer's chat template)" if template == "auto"
                                                         else " (the tokenizer has no chat template)"))
    get_template(template)
    records = [r for _, r in pairs]
    task = task or guess_task(records)
    for where, rec in pairs:
        wrong = task_mismatch(rec, where, path, task)
        if wrong:
            raise TuituneError(wrong)
    if task in PREFERENCE_TASKS:
        return _inspect_pairs(path, model, tok, template, max_length, record, task, pairs, notes)
    if task in PROMPT_TASKS:
        return _inspect_prompts(path, model, tok, template, max_length, record, task, pairs, notes)
    lengths = []
    for where, rec in pairs:
        try:
            lengths.append(len(encode_conversation(tok, rec, template, max_length=0, task=task)["input_ids"]))
        except TuituneError as exc:
            raise TuituneError(f"{path}: {where}: {exc}") from None
    where, rec = pairs[record - 1]
    enc = encode_conversation(tok, rec, template, max_length, task)
    s = sorted(lengths)
    return InspectResult(
        path=str(path), model=str(model), template=template, task=task, max_length=max_length,
        records=len(s), min=s[0], median=statistics.median(s), p95=_percentile(s, 0.95), max=s[-1],
        truncated=sum(1 for n in s if n > max_length), record=record, record_where=where,
        record_tokens=len(enc["input_ids"]), record_trained=sum(1 for x in enc["labels"] if x != -100),
        spans=token_spans(tok, enc["input_ids"], enc["labels"]), notes=notes,
    )


def _inspect_pairs(path, model, tok, template, max_length, record, task, pairs, notes) -> InspectResult:
    """Preference pairs: lengths of prompt + the longer answer; record ``record``'s two sides."""
    from tuitune.encode import encode_preference, token_spans

    lengths, sides = [], None
    for n, (where, rec) in enumerate(pairs, 1):
        try:
            enc = encode_preference(tok, rec, template, 0)
        except TuituneError as exc:
            raise TuituneError(f"{path}: {where}: {exc}") from None
        lengths.append(len(enc["prompt_ids"]) + max(len(enc["chosen_ids"]), len(enc["rejected_ids"])))
        if n == record:
            sides = encode_preference(tok, rec, template, max_length) or enc
    where = pairs[record - 1][0]
    prompt = sides["prompt_ids"]

    def spans(answer):
        return token_spans(tok, prompt + answer, [-100] * len(prompt) + answer)

    notes.append("preference pairs: the prompt is context (masked); the chosen and the rejected answer are "
                 "compared, each after the same prompt")
    s = sorted(lengths)
    return InspectResult(
        path=str(path), model=str(model), template=template, task=task, max_length=max_length,
        records=len(s), min=s[0], median=statistics.median(s), p95=_percentile(s, 0.95), max=s[-1],
        truncated=sum(1 for n in s if n > max_length), record=record, record_where=where,
        record_tokens=len(prompt) + len(sides["chosen_ids"]), record_trained=len(sides["chosen_ids"]),
        spans=spans(sides["chosen_ids"]), notes=notes, rejected_spans=spans(sides["rejected_ids"]),
    )


def _inspect_prompts(path, model, tok, template, max_length, record, task, pairs, notes) -> InspectResult:
    """Prompt records: each prompt rendered as training renders it (its system prompt and earlier turns,
    then the template's generation prompt), its length; record ``record``'s text and reference answer."""
    from tuitune.data.prompts import messages_of
    from tuitune.encode import token_spans
    from tuitune.templates import encode_prompt

    ids_of = []
    for where, rec in pairs:
        try:
            ids_of.append(encode_prompt(tok, template, messages_of(rec)))
        except TuituneError as exc:
            raise TuituneError(f"{path}: {where}: {exc}") from None
    where, rec = pairs[record - 1]
    ids = ids_of[record - 1]
    notes.append("prompt records: the prompt as the model sees it, ending where its answer starts; GRPO samples "
                 "completions there and learns from their rewards, so no token of the prompt is trained")
    s = sorted(map(len, ids_of))
    return InspectResult(
        path=str(path), model=str(model), template=template, task=task, max_length=max_length,
        records=len(s), min=s[0], median=statistics.median(s), p95=_percentile(s, 0.95), max=s[-1],
        truncated=sum(1 for n in s if n >= max_length), record=record, record_where=where,
        record_tokens=len(ids), record_trained=0, spans=token_spans(tok, ids, [-100] * len(ids)), notes=notes,
        answer=rec.get("answer"),
    )


def render_spans_plain(spans: list[tuple[str, bool]]) -> str:
    """Trained text between ⟦ and ⟧, masked text as is; newlines shown as ↵ then a line break."""
    out = []
    for text, trained in spans:
        shown = text.replace("\n", "↵\n")
        out.append(f"⟦{shown}⟧" if trained else shown)
    return "".join(out)

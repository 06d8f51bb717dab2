"""Prompt records (task grpo): the record, its checks, and the shapes it is converted from.

The record, one JSON object a line::

    {"conversation": [{"system"?: "...", "input": "...", "output": "..."}, ...],  # earlier turns, or absent
     "system"?: "...",                 # the system prompt when there are no earlier turns
     "prompt": "the user message the model answers",
     "answer"?: "the reference a reward checks against (exact, contains)"}

The earlier turns are context (a worked example, say), never trained: GRPO samples completions of
the prompt and learns from their rewards.

Converted from (:data:`MAPPERS`, by the name ``tuitune data convert`` detects or is given):

* ``gsm8k``: ``question``/``answer`` with the final answer after ``####`` (the reasoning before it dropped);
* any conversation format, through its conversation mapper (:func:`from_turns`): the last user turn is
  the prompt, its output the reference, the turns before it the context; alpaca's instruction (and
  input) is the prompt, its output the reference;
* ``prompts``: the record above, checked and passed through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tuitune.data import formats
from tuitune.data.io import iter_json_items
from tuitune.data.records import (PROMPT_SHAPE, PROMPT_TASKS, SFT_TASKS, Detection, MapError, is_prompt_record,
                                  system_of)
from tuitune.errors import TuituneError

SHAPE = PROMPT_SHAPE
PROMPT_FORMATS = ("prompts", "gsm8k")
FORMAT_HELP = {
    "prompts": "prompt records {prompt, answer?, system?, conversation?} (tuitune's, for grpo)",
    "gsm8k": "GSM8K-style {question, answer} with the final answer after ####",
}


def detect(item: Any):
    """``prompts`` or ``gsm8k`` with the reason, or None (another format, or a conversation to convert)."""
    if is_prompt_record(item):
        return Detection("prompts", "records are prompts {prompt, answer} (for grpo)")
    if isinstance(item, dict) and isinstance(item.get("question"), str) and isinstance(item.get("answer"), str) \
            and "####" in item["answer"]:
        return Detection("gsm8k", "records have question/answer with the final answer after #### (GSM8K)")
    return None


def final_answer(text: str) -> str:
    """GSM8K's final answer: what follows the last ``####``, stripped (the number, without its commas' fuss)."""
    return text.rsplit("####", 1)[-1].strip()


def map_gsm8k(item: Any) -> dict:
    if not isinstance(item, dict) or "question" not in item or "answer" not in item:
        raise MapError("a GSM8K record needs question and answer")
    q, a = item["question"], item["answer"]
    if not isinstance(q, str) or not q.strip():
        raise MapError("the question is empty")
    if not isinstance(a, str) or "####" not in a or not final_answer(a):
        raise MapError("the answer has no final answer after ####")
    return {"prompt": q.strip(), "answer": final_answer(a)}


def from_turns(turns: list[dict]) -> dict:
    """A conversation's turns as a prompt record: the last turn's input is the prompt, its output the
    reference answer, the turns before it the context (the system prompt stays on the first turn)."""
    if not turns:
        raise MapError("no turns")
    *earlier, last = [dict(t) for t in turns]
    prompt = (last.get("input") or "").strip()
    if not prompt:
        raise MapError("the last turn has no user input to use as the prompt")
    rec: dict = {"prompt": prompt}
    if earlier:
        rec = {"conversation": earlier, **rec}
    elif last.get("system"):
        rec = {"system": last["system"], **rec}
    if (last.get("output") or "").strip():
        rec["answer"] = last["output"].strip()
    return rec


def map_prompts(item: Any) -> dict:
    try:
        return validate_prompt(item, "record", "input")
    except TuituneError as exc:
        raise MapError(str(exc).split(": ", 2)[-1]) from None


#: The prompt formats' mappers; a conversation format ``F`` converts as ``from_turns(formats.MAPPERS[F](item))``.
MAPPERS = {"prompts": map_prompts, "gsm8k": map_gsm8k}


def to_prompt_mapper(fmt: str):
    """The mapper from records of format ``fmt`` (a prompt format, or any conversation format) to prompt records."""
    if fmt in MAPPERS:
        return MAPPERS[fmt]
    if fmt not in formats.MAPPERS:
        raise TuituneError(f"format {fmt!r} cannot become prompt records; give conversations, alpaca, GSM8K "
                           "question/answer, or prompt records")
    base = formats.MAPPERS[fmt]
    return lambda item: from_turns(base(item))


# --- reading and checking ------------------------------------------------------------------------

def validate_prompt(rec: Any, where: str, path: Path | str) -> dict:
    """Check one prompt record; return it (a numeric answer as text) or raise a TuituneError naming the field."""
    if not isinstance(rec, dict):
        raise TuituneError(f"{path}: {where}: expected an object {SHAPE}, got {type(rec).__name__}")
    if "prompt" not in rec:
        raise TuituneError(f"{path}: {where}: a prompt record needs \"prompt\" (fields: {', '.join(map(str, rec))}); "
                           "convert the file with `tuitune data convert`")
    if not isinstance(rec["prompt"], str) or not rec["prompt"].strip():
        raise TuituneError(f"{path}: {where}: \"prompt\" is empty or not a string; fill it in or remove the record")
    out = dict(rec)
    answer = rec.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        out["answer"] = format(answer, "g") if isinstance(answer, float) else str(answer)
    elif answer is not None and not isinstance(answer, str):
        raise TuituneError(f"{path}: {where}: \"answer\" is {type(answer).__name__}; give the reference answer as "
                           "text (or a number)")
    if rec.get("system") is not None and not isinstance(rec["system"], str):
        raise TuituneError(f"{path}: {where}: \"system\" is {type(rec['system']).__name__}, expected a string")
    conv = rec.get("conversation", [])
    if not isinstance(conv, list):
        raise TuituneError(f"{path}: {where}: \"conversation\" is {type(conv).__name__}; give the earlier turns "
                           "as a list (or leave it out)")
    for t, turn in enumerate(conv, 1):
        if not isinstance(turn, dict) or not all(isinstance(turn.get(k, ""), str) for k in ("system", "input", "output")):
            raise TuituneError(f"{path}: {where}: conversation turn {t} is not an object of strings "
                               "{system?, input, output}")
    return out


def iter_prompts(path: str | Path) -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for each prompt record of a JSON/JSONL file; TuituneError at the first bad one."""
    path = Path(path)
    for where, item in iter_json_items(path):
        wrong = task_mismatch(item, where, path, "grpo")
        if wrong:
            raise TuituneError(wrong)
        yield where, validate_prompt(item, where, path)


def load_prompts(path: str | Path) -> list[tuple[str, dict]]:
    out = list(iter_prompts(path))
    if not out:
        raise TuituneError(f"{path}: no records; convert prompts with `tuitune data convert`")
    return out


def messages_of(rec: dict, system: str | None = None) -> list[dict]:
    """The record as chat messages up to its prompt: the system prompt (its own, else ``system``), the
    earlier turns, the prompt. What the template renders and the model completes."""
    turns = rec.get("conversation") or []
    sys_prompt = system_of(rec) or system
    msgs = [{"role": "system", "content": sys_prompt}] if sys_prompt else []
    for t in turns:
        msgs += [{"role": "user", "content": t.get("input") or ""}, {"role": "assistant", "content": t.get("output") or ""}]
    return msgs + [{"role": "user", "content": rec["prompt"]}]


def task_mismatch(rec: Any, where: str, path: Path | str, task: str) -> str | None:
    """The error line when a record does not fit ``task`` (a conversation for grpo, a prompt record for sft)."""
    fields = ", ".join(map(str, rec)) if isinstance(rec, dict) else type(rec).__name__
    if task in PROMPT_TASKS and not is_prompt_record(rec):
        return (f"{path}: {where}: task grpo learns from prompt records {SHAPE}, but this record has fields "
                f"{fields}; give prompt records, or set the task that fits it")
    if task in SFT_TASKS and is_prompt_record(rec):
        return (f"{path}: {where}: this is a prompt record for grpo (fields {fields}), but task is {task}; "
                "set task: grpo, or give conversation records")
    return None

"""Prompt records (task grpo): the record, its checks, and the shapes it is converted from.

The record, one JSON object a line::

    {"conversation": [{"system"?: "...", "input": "...", "output": "..."}, ...],  # earlier turns, or absent
     "system"?: "...",                 # the system prompt when there are no earlier turns
     "prompt": "the user message the model answers",
     "answer"?: "the reference a reward checks against (exact, contains)"}

The earlier turns are context (a worked example, say), never trained: GRPO samples completions of
the prompt and learns from their rewards.

Converted from (``tuitune data convert --to prompts``, by the format it detects or is given):

* ``gsm8k``: ``question``/``answer`` with the final answer after ``####`` (the reasoning before it dropped);
* any conversation format, through its conversation mapper and :func:`from_turns`
  (:func:`tuitune.data.formats.to_prompt_mapper`): the last user turn is the prompt, its output the
  reference, the turns before it the context; alpaca's instruction (and input) is the prompt, its
  output the reference;
* ``prompts``: the record above, checked (:func:`tuitune.data.io.validate_prompt`) and passed through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tuitune.data.io import iter_records, validate_prompt
from tuitune.data.records import PROMPT_SHAPE, Detection, MapError, is_prompt_record, system_of
from tuitune.errors import TuituneError

SHAPE = PROMPT_SHAPE
PROMPT_FORMATS = ("prompts", "gsm8k")
FORMAT_HELP = {
    "prompts": "prompt records {prompt, answer?, system?, conversation?} (tuitune's, for grpo)",
    "gsm8k": "GSM8K-style {question, answer} with the final answer after ####",
}
#: What ``--to prompts`` takes from each source, for the report's mapping line.
MAPPING = {"gsm8k": "question → prompt, the final answer after #### → answer (the worked steps dropped)",
           "prompts": "prompt records, checked",
           None: "the last user turn → prompt, its reply → answer, the turns before it kept as context"}


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
        raise MapError("field \"question\" is empty")
    if not isinstance(a, str) or "####" not in a or not final_answer(a):
        raise MapError("field \"answer\" has no final answer after #### (GSM8K ends it with a line \"#### 72\"); "
                       "add it")
    return {"prompt": q.strip(), "answer": final_answer(a)}


def from_turns(turns: list[dict]) -> dict:
    """A conversation's turns as a prompt record: the last turn's input is the prompt, its output the
    reference answer, the turns before it the context (the system prompt stays on the first turn)."""
    if not turns:
        raise MapError("no turns")
    *earlier, last = [dict(t) for t in turns]
    prompt = (last.get("input") or "").strip()
    if not prompt:
        raise MapError("the last turn has no user input to be the prompt (pretraining text has no prompt)")
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


# --- reading ---------------------------------------------------------------------------------------

def iter_prompts(path: str | Path) -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for each prompt record of a JSON/JSONL file; TuituneError at the first bad one."""
    yield from iter_records(path, task="grpo")


def load_prompts(path: str | Path) -> list[tuple[str, dict]]:
    out = list(iter_prompts(path))
    if not out:
        raise TuituneError(f"{path}: no records; make prompt records with `tuitune data convert IN -o {path} "
                           "--to prompts`")
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

"""The record kinds: the bottom layer of ``tuitune.data``, which the formats, the readers, the encoder,
the config schema and the trainers all import (it imports nothing of tuitune but its errors).

Three kinds of record, one JSON object a line (see DESIGN.md, "The data format"):

* a conversation (tasks sft, pretrain): ``{"conversation": [{"system"?, "input", "output"}, ...]}``,
  the system prompt on the first turn;
* a preference pair (dpo, orpo): ``{"conversation": [earlier turns], "system"?, "prompt", "chosen",
  "rejected"}``, the top-level ``system`` when there are no earlier turns;
* a prompt record (grpo): ``{"conversation"?: [earlier turns], "system"?, "prompt", "answer"?}``.

Here: which tasks learn from which kind, how to tell the kinds apart, the field helpers every mapper
uses to read a source's fields (:func:`as_text`, :func:`need_dict`, :func:`turns_from_messages`,
:func:`sharegpt_turns`, :func:`conversation_turns`) with the error they raise (:class:`MapError`) and
what detection returns (:class:`Detection`), the one system-prompt rule (:func:`system_of`,
:func:`with_system`, :func:`set_system`), and the one check that a record is the kind its task learns from
(:func:`task_mismatch`, from the table :data:`KINDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuitune.errors import TuituneError

#: Tasks that learn from conversations (answers, or plain text for pretrain).
SFT_TASKS = ("sft", "pretrain")
#: Tasks that learn from preference pairs (chosen over rejected) rather than from answers.
PREFERENCE_TASKS = ("dpo", "orpo")
#: Tasks that learn from prompts and rewards on sampled completions.
PROMPT_TASKS = ("grpo",)
TASKS = SFT_TASKS + PREFERENCE_TASKS + PROMPT_TASKS

PREF_KEYS = ("prompt", "chosen", "rejected")
PREFERENCE_SHAPE = '{"conversation": [earlier turns], "prompt": ..., "chosen": ..., "rejected": ...}'
PROMPT_SHAPE = '{"prompt": ..., "answer": ..., "system"?: ..., "conversation"?: [earlier turns]}'


# --- the kinds ----------------------------------------------------------------------------------

def is_preference(item: Any) -> bool:
    """A preference pair in any of the shapes it comes in (it has a chosen and a rejected answer)."""
    return isinstance(item, dict) and "chosen" in item and "rejected" in item


def is_prompt_record(item: Any) -> bool:
    """A prompt record: a ``prompt`` and no chosen/rejected pair."""
    return isinstance(item, dict) and "prompt" in item and "chosen" not in item and "rejected" not in item


# --- the system prompt: one rule ------------------------------------------------------------------

def system_of(rec: dict) -> str | None:
    """The record's own system prompt: a pair's or a prompt record's top-level ``system``, else the
    first turn's (a conversation's system prompt is on its first turn only)."""
    turns = rec.get("conversation") or []
    own = turns[0].get("system") if turns else None
    return (rec.get("system") or own) if "prompt" in rec else own


def with_system(rec: dict, system: str | None) -> dict:
    """The record with ``system`` (the run's ``data.system``) as its system prompt where it has none
    of its own: on the first turn, or for a pair or prompt record with no earlier turns at the top
    (after its empty ``conversation``, as the converter writes it). ``rec`` itself is not changed."""
    if not system or system_of(rec):
        return rec
    turns = rec.get("conversation") or []
    if turns:
        first = {k: v for k, v in turns[0].items() if k != "system"}
        return {**rec, "conversation": [{"system": system, **first}, *turns[1:]]}
    head = {k: rec[k] for k in ("conversation",) if k in rec}
    return {**head, "system": system, **{k: v for k, v in rec.items() if k not in head}}


def set_system(rec: dict, system: str) -> dict:
    """The record with ``system`` as its system prompt in place of its own (``data convert --system``):
    where :func:`with_system` puts one, whatever the record's kind."""
    turns = rec.get("conversation") or []
    bare = {k: v for k, v in rec.items() if k != "system"}
    if turns:
        bare["conversation"] = [{k: v for k, v in turns[0].items() if k != "system"}, *turns[1:]]
    return with_system(bare, system)


def conversation_of(rec: dict, answer: str) -> dict:
    """The conversation of a pair's (or prompt record's) context, its prompt and ``answer``."""
    turns = [dict(t) for t in rec.get("conversation") or []]
    last = {"input": rec["prompt"], "output": answer}
    if not turns and rec.get("system"):
        last = {"system": rec["system"], **last}
    return {"conversation": turns + [last]}


def first_question(rec: dict) -> str:
    """What a leak-free split groups by: a prompt record's prompt (its earlier turns are context, often
    one worked example shared by every record), else the record's first user message."""
    if is_prompt_record(rec):
        return rec["prompt"] or ""
    turns = rec.get("conversation") or []
    return (turns[0].get("input") if turns else rec.get("prompt")) or ""


# --- which kind of record a task learns from: one table --------------------------------------------

@dataclass(frozen=True)
class Kind:
    """A kind of record as the errors name it."""

    tasks: tuple[str, ...]   # the tasks that learn from it
    plural: str              # "preference pairs"
    this: str                # "a preference pair": what a record of this kind is
    shape: str
    fix: str                 # how to get records of this kind (when a task wants them)


KINDS = {
    "conversation": Kind(SFT_TASKS, "conversation records", "a conversation record",
                         '{"conversation": [{"system"?, "input", "output"}, ...]}',
                         "convert them with `tuitune data convert`"),
    "pair": Kind(PREFERENCE_TASKS, "preference pairs", "a preference pair", PREFERENCE_SHAPE,
                 "convert pairs with `tuitune data convert`, or set task: sft"),
    "prompt": Kind(PROMPT_TASKS, "prompt records", "a prompt record for grpo", PROMPT_SHAPE,
                   "make them with `tuitune data convert IN -o OUT --to prompts`, or set task: sft"),
}


def kind_of(rec: Any) -> str:
    """``pair``, ``prompt`` or ``conversation`` (anything else is read as a conversation, and its check says why not)."""
    return "pair" if is_preference(rec) else "prompt" if is_prompt_record(rec) else "conversation"


def task_mismatch(rec: Any, where: str, path: Any, task: str) -> str | None:
    """The error line when record ``rec`` (at ``path``: ``where``) is not the kind ``task`` learns from
    (a pair or a prompt record for sft, a conversation for dpo or grpo, ...); None when it is, or for a
    task that takes any kind."""
    kind = kind_of(rec)
    want = next((k for k, v in KINDS.items() if task in v.tasks), kind)
    if kind == want:
        return None
    fields = ", ".join(map(str, rec)) if isinstance(rec, dict) else type(rec).__name__
    if kind == "conversation":
        w = KINDS[want]
        return (f"{path}: {where}: task {task} learns from {w.plural} {w.shape}, but this record has fields "
                f"{fields}; {w.fix}")
    k = KINDS[kind]
    return (f"{path}: {where}: this is {k.this} (fields {fields}), but task is {task}; set task: "
            f"{' or '.join(k.tasks)}, or give {KINDS[want].plural}")


def check_context(rec: dict, where: str, path: Any) -> None:
    """A pair's or prompt record's earlier turns (``conversation``, absent for none): a list of objects of
    strings; else a TuituneError naming the field (the check of each kind's record calls it)."""
    conv = rec.get("conversation", [])
    if not isinstance(conv, list):
        raise TuituneError(f"{path}: {where}: \"conversation\" is {type(conv).__name__}; give the earlier turns "
                           "as a list ([] or no \"conversation\" for none)")
    for t, turn in enumerate(conv, 1):
        if not isinstance(turn, dict) or not all(isinstance(turn.get(k, ""), str) for k in ("system", "input", "output")):
            raise TuituneError(f"{path}: {where}: conversation turn {t} is not an object of strings "
                               "{system?, input, output}")


# --- reading a source's fields (every format's mapper) ---------------------------------------------

class MapError(ValueError):
    """An item that does not fit the format; the caller adds the file and row."""


@dataclass(frozen=True)
class Detection:
    """A format's name and why it was taken (what the user sees)."""

    format: str
    reason: str


def as_text(value: Any, field: str) -> str:
    """A field's value as text: strings, numbers, OpenAI content parts; None is ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):  # OpenAI content parts
        parts = [p.get("text", "") for p in value if isinstance(p, dict)]
        if len(parts) == len(value):
            return "".join(parts)
    raise MapError(f"field \"{field}\" is {type(value).__name__}, expected text")


def need_dict(item: Any) -> dict:
    if not isinstance(item, dict):
        raise MapError(f"expected an object, got {type(item).__name__}")
    return item


def turns_from_messages(turns: list[tuple[str, str]], what: str, open_end: bool = False) -> list[dict]:
    """(role, text) with role in system/user/assistant → conversation turns. ``open_end``: user
    messages after the last reply are a last turn with an empty output (a prompt still to answer)."""
    out: list[dict] = []
    system = ""
    pending: list[str] = []
    for role, text in turns:
        if role == "system":
            if out or pending:
                raise MapError(f"a system message after the first turn in {what}; move it to the start")
            system = text
        elif role == "user":
            pending.append(text)
        elif role == "assistant":
            turn = {"input": "\n".join(pending), "output": text}
            if system and not out:
                turn = {"system": system, **turn}
            out.append(turn)
            pending = []
        else:
            raise MapError(f"unknown role {role!r} in {what}")
    if pending and open_end:
        turn = {"input": "\n".join(pending), "output": ""}
        out.append({"system": system, **turn} if system and not out else turn)
    if not out:
        raise MapError(f"no assistant reply in {what}")
    return out


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                   "system": "system"}


def sharegpt_turns(d: dict) -> list[tuple[str, str]]:
    """A ShareGPT record's (role, text) messages, its ``system`` first (conversations and ranking pairs)."""
    conv = d.get("conversations")
    if not isinstance(conv, list):
        raise MapError(f"no \"conversations\" list (fields: {', '.join(map(str, d))})")
    turns = []
    if d.get("system"):
        turns.append(("system", as_text(d["system"], "system")))
    for i, m in enumerate(conv, 1):
        if not isinstance(m, dict) or "from" not in m:
            raise MapError(f"conversations[{i}] has no \"from\"")
        role = _SHAREGPT_ROLES.get(str(m["from"]).lower())
        if role is None:
            raise MapError(f"conversations[{i}].from is {m['from']!r}; expected human, gpt or system")
        turns.append((role, as_text(m.get("value"), f"conversations[{i}].value")))
    return turns


def conversation_turns(item: Any) -> list[dict]:
    """An XTuner record's ``conversation`` as checked turns (the ``xtuner`` format's mapper)."""
    conv = need_dict(item).get("conversation")
    if not isinstance(conv, list) or not conv:
        raise MapError("missing or empty \"conversation\" list")
    out = []
    for i, t in enumerate(conv, 1):
        if not isinstance(t, dict):
            raise MapError(f"conversation turn {i} is not an object")
        turn = {"input": as_text(t.get("input"), f"conversation[{i}].input"),
                "output": as_text(t.get("output"), f"conversation[{i}].output")}
        if t.get("system"):
            turn = {"system": as_text(t["system"], f"conversation[{i}].system"), **turn}
        out.append(turn)
    return out

"""Preference pairs (tasks dpo and orpo): the record, its checks, and the shapes it comes from.

The record, one JSON object a line::

    {"conversation": [{"system"?: "...", "input": "...", "output": "..."}, ...],  # earlier turns, or []
     "system"?: "...",                       # the system prompt when there are no earlier turns
     "prompt": "the last user message",
     "chosen": "the preferred answer",
     "rejected": "the other answer"}

The earlier turns are XTuner's conversation turns: context, never trained. What is learned is
that after them and ``prompt``, ``chosen`` is likelier than ``rejected``.

Converted from (``tuitune data convert``, detected per record):

* ``pref_messages``: ``chosen``/``rejected`` as message lists (``{"role", "content"}``), each the
  whole conversation (UltraFeedback-binarized, Anthropic HH in TRL's form), or with the prompt
  in a separate ``prompt`` (a string or a message list; TRL's conversational form);
* ``pref_text``: ``prompt`` (or alpaca's ``instruction`` + ``input``), ``chosen``, ``rejected``
  as strings (TRL's standard form, LLaMA-Factory's alpaca ranking data), ``system`` optional;
* ``sharegpt_ranking``: LLaMA-Factory's ranking ShareGPT, ``conversations`` ending on the user
  and ``chosen``/``rejected`` as ``{"from": "gpt", "value"}``, ``system`` optional;
* ``preference``: the record above, checked and passed through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuitune.data.records import (PREF_KEYS, PREFERENCE_SHAPE, Detection, MapError, as_text, check_context,
                                  conversation_turns, is_preference, need_dict, sharegpt_turns, turns_from_messages,
                                  with_system)
# eval/run.py still reads conversation_of here (its import is item 3's file): until it reads records.
from tuitune.data.records import conversation_of  # noqa: F401
from tuitune.errors import TuituneError

PREFERENCE_FORMATS = ("preference", "pref_messages", "pref_text", "sharegpt_ranking")
FORMAT_HELP = {
    "preference": "preference pairs {conversation, prompt, chosen, rejected} (tuitune's, for dpo/orpo)",
    "pref_messages": "preference pairs with chosen/rejected message lists (UltraFeedback, TRL conversational)",
    "pref_text": "preference pairs {prompt|instruction, chosen, rejected} as strings (TRL, LLaMA-Factory alpaca)",
    "sharegpt_ranking": "LLaMA-Factory's ranking ShareGPT {conversations, chosen: {from, value}, rejected}",
}
SHAPE = PREFERENCE_SHAPE


def validate_preference(rec: Any, where: str, path: Path | str) -> dict:
    """Check one preference record; return it or raise a TuituneError naming the field."""
    if not isinstance(rec, dict):
        raise TuituneError(f"{path}: {where}: expected an object {SHAPE}, got {type(rec).__name__}")
    missing = [k for k in PREF_KEYS if k not in rec]
    if missing:
        raise TuituneError(f"{path}: {where}: a preference record needs {', '.join(PREF_KEYS)}; missing "
                           f"{', '.join(missing)} (fields: {', '.join(map(str, rec))}); convert the file with "
                           "`tuitune data convert`")
    for key in ("prompt", "chosen", "rejected", "system"):
        val = rec.get(key)
        if val is not None and not isinstance(val, str):
            raise TuituneError(f"{path}: {where}: field \"{key}\" is {type(val).__name__}, expected a string; "
                               "convert the file with `tuitune data convert`")
    for key in ("chosen", "rejected"):
        if not rec[key].strip():
            raise TuituneError(f"{path}: {where}: \"{key}\" is empty; fill it in or remove the record")
    if rec["chosen"] == rec["rejected"]:
        raise TuituneError(f"{path}: {where}: \"chosen\" and \"rejected\" are the same answer, which teaches "
                           "nothing; fix or remove the record")
    check_context(rec, where, path)
    return rec


# --- the shapes it comes from -------------------------------------------------------------------

def detect(item: Any):
    """The preference format of ``item``, with the reason; None when it is not a pair."""
    if not is_preference(item):
        return None
    chosen = item["chosen"]
    if isinstance(chosen, list):
        return Detection("pref_messages", "records have \"chosen\"/\"rejected\" message lists (UltraFeedback / "
                                          "TRL conversational preference pairs)")
    if isinstance(chosen, dict) and isinstance(item.get("conversations"), list):
        return Detection("sharegpt_ranking", "records have \"conversations\" and \"chosen\"/\"rejected\" turns "
                                             "(LLaMA-Factory's ranking ShareGPT)")
    if isinstance(item.get("conversation"), list) and "prompt" in item:
        return Detection("preference", "records are preference pairs {conversation, prompt, chosen, rejected}")
    if isinstance(chosen, str):
        return Detection("pref_text", "records have prompt/chosen/rejected strings (preference pairs)")
    return None


def _need(d: dict, key: str) -> Any:
    if key not in d:
        raise MapError(f"no \"{key}\" field (fields: {', '.join(map(str, d))})")
    return d[key]


def _record(history: list[dict], system: str, prompt: str, chosen: str, rejected: str) -> dict:
    if not prompt.strip():
        raise MapError("the prompt (the last user message) is empty")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise MapError(f"\"{name}\" is empty")
    if chosen == rejected:
        raise MapError("\"chosen\" and \"rejected\" are the same answer")
    return with_system({"conversation": history, "prompt": prompt, "chosen": chosen, "rejected": rejected},
                       system)


def _split_messages(msgs: list, what: str) -> tuple[list[tuple[str, str]], str]:
    """Messages ending on the assistant → (the messages before the answer, the answer)."""
    pairs = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict) or "role" not in m:
            raise MapError(f"{what}[{i}] has no \"role\"")
        pairs.append(({"developer": "system"}.get(m["role"], m["role"]), as_text(m.get("content"), f"{what}[{i}].content")))
    if not pairs or pairs[-1][0] != "assistant":
        raise MapError(f"{what} does not end with an assistant message")
    return pairs[:-1], pairs[-1][1]


def _context(pairs: list[tuple[str, str]], what: str) -> tuple[list[dict], str, str]:
    """(role, text) ending on the user → (earlier XTuner turns, system prompt, the last user message)."""
    system = pairs[0][1] if pairs and pairs[0][0] == "system" else ""
    rest = pairs[1:] if system else pairs
    if not rest or rest[-1][0] != "user":
        raise MapError(f"{what} does not end with a user message before the answers")
    users = 0
    while users < len(rest) and rest[len(rest) - 1 - users][0] == "user":
        users += 1
    prompt = "\n".join(t for _, t in rest[len(rest) - users:])
    earlier = rest[:len(rest) - users]
    history = turns_from_messages(earlier, what) if earlier else []
    return history, system, prompt


def map_pref_messages(item: Any) -> dict:
    d = need_dict(item)
    chosen_ctx, chosen = _split_messages(_need(d, "chosen"), "chosen")
    rejected_ctx, rejected = _split_messages(_need(d, "rejected"), "rejected")
    prompt = d.get("prompt")
    if isinstance(prompt, list):
        ctx = _split_prompt(prompt)
        if chosen_ctx or rejected_ctx:
            raise MapError("\"prompt\" is a message list and \"chosen\" carries earlier messages too; give one")
    elif chosen_ctx or rejected_ctx:
        if chosen_ctx != rejected_ctx:
            raise MapError("\"chosen\" and \"rejected\" differ before their last message; a pair shares its "
                           "conversation and differs in the answer only")
        ctx = chosen_ctx
    elif isinstance(prompt, str):
        ctx = [("user", as_text(prompt, "prompt"))]
    else:
        raise MapError("no conversation before the answers: \"chosen\" holds only the answer and there is no "
                       "\"prompt\"")
    history, system, last = _context(ctx, "the conversation")
    return _record(history, system or as_text(d.get("system"), "system"), last, chosen, rejected)


def _split_prompt(msgs: list) -> list[tuple[str, str]]:
    out = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict) or "role" not in m:
            raise MapError(f"prompt[{i}] has no \"role\"")
        out.append(({"developer": "system"}.get(m["role"], m["role"]), as_text(m.get("content"), f"prompt[{i}].content")))
    return out


def map_pref_text(item: Any) -> dict:
    d = need_dict(item)
    if "prompt" in d:
        prompt = as_text(d["prompt"], "prompt")
    elif "instruction" in d:
        inst, extra = as_text(d["instruction"], "instruction"), as_text(d.get("input"), "input")
        prompt = f"{inst}\n{extra}" if extra.strip() else inst
    else:
        raise MapError(f"no \"prompt\" (or \"instruction\") field (fields: {', '.join(map(str, d))})")
    return _record([], as_text(d.get("system"), "system"), prompt, as_text(_need(d, "chosen"), "chosen"),
                   as_text(_need(d, "rejected"), "rejected"))


def map_sharegpt_ranking(item: Any) -> dict:
    d = need_dict(item)
    history, system, prompt = _context(sharegpt_turns(d), "conversations")
    answers = []
    for key in ("chosen", "rejected"):
        a = d[key]
        answers.append(as_text(a.get("value") if isinstance(a, dict) else a, f"{key}.value"))
    return _record(history, system, prompt, *answers)


def map_preference(item: Any) -> dict:
    d = need_dict(item)
    history = conversation_turns({"conversation": d["conversation"]}) if d.get("conversation") else []
    if "prompt" not in d:
        raise MapError("no \"prompt\" field")
    return _record(history, as_text(d.get("system"), "system"), as_text(d["prompt"], "prompt"),
                   as_text(_need(d, "chosen"), "chosen"), as_text(_need(d, "rejected"), "rejected"))


MAPPERS = {"preference": map_preference, "pref_messages": map_pref_messages, "pref_text": map_pref_text,
           "sharegpt_ranking": map_sharegpt_ranking}

"""Input formats: detection (with the reason), mapping of one item to conversation turns, and what
``data convert`` makes of each format (:func:`target_of`, :func:`record_mapper`).

A turn is ``{"system"?: str, "input": str, "output": str}``; the system prompt sits on
the first turn only. Preference formats map to pairs (:mod:`tuitune.data.preference`), prompt
formats to prompt records (:mod:`tuitune.data.prompts`); any conversation format also becomes
prompt records (``--to prompts``: :func:`to_prompt_mapper`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tuitune.data import preference, prompts
from tuitune.data.io import iter_json_items, table_kind
from tuitune.data.records import (Detection, MapError, as_text, conversation_turns, need_dict, sharegpt_turns,
                                  turns_from_messages)
from tuitune.errors import FIELD, TuituneError

TABLE_FORMATS = ("xlsx", "csv")
JSON_FORMATS = ("xtuner", "alpaca", "sharegpt", "openai", "oasst1", "text", "columns",
                "preference", "pref_messages", "pref_text", "sharegpt_ranking", "prompts", "gsm8k")
FORMAT_NAMES = TABLE_FORMATS + JSON_FORMATS + ("txt",)

FORMAT_HELP = {
    "xlsx": "Excel sheet; columns mapped to input/output",
    "csv": "CSV (utf-8 or gbk); columns mapped to input/output",
    "xtuner": "XTuner conversation records {\"conversation\": [{system, input, output}]}",
    "alpaca": "alpaca {instruction, input, output}",
    "sharegpt": "ShareGPT {conversations: [{from: human|gpt|system, value}]}",
    "openai": "OpenAI messages {messages: [{role, content}]}",
    "oasst1": "oasst1/guanaco {text: \"### Human: ...### Assistant: ...\"}",
    "text": "pretraining records {text: ...}",
    "columns": "JSON records with fields named by --input-col/--output-col",
    "txt": "plain text for pretraining: each blank-line separated paragraph is a record",
    **preference.FORMAT_HELP,
    **prompts.FORMAT_HELP,
}
#: What ``data convert --to`` makes (preference formats make pairs, and only pairs).
TARGETS = ("conversations", "prompts")


def _peek_json(path: Path) -> Any:
    for _, item in iter_json_items(path, skip_bad_lines=True):
        return item
    raise TuituneError(f"{path}: no records in the file")


def detect_item(item: Any) -> Detection | None:
    if not isinstance(item, dict):
        return None
    keys = set(item)
    shown = ", ".join(sorted(map(str, keys)))
    pref = preference.detect(item)
    if pref is not None:
        return pref
    prompt = prompts.detect(item)  # before "conversation": a prompt record may carry earlier turns
    if prompt is not None:
        return prompt
    if isinstance(item.get("conversation"), list):
        return Detection("xtuner", "records have a \"conversation\" list (XTuner's format)")
    conv = item.get("conversations")
    if isinstance(conv, list) and conv and isinstance(conv[0], dict) and "from" in conv[0]:
        return Detection("sharegpt", "records have \"conversations\" with \"from\"/\"value\" turns (ShareGPT)")
    msgs = item.get("messages")
    if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and "role" in msgs[0]:
        return Detection("openai", "records have \"messages\" with \"role\"/\"content\" (OpenAI chat)")
    if "instruction" in keys and "output" in keys:
        return Detection("alpaca", f"records have instruction/output fields (alpaca; keys: {shown})")
    if isinstance(item.get("text"), str):
        if re.search(r"###\s*Human:", item["text"]):
            return Detection("oasst1", "records have \"text\" with \"### Human:\"/\"### Assistant:\" turns (oasst1/guanaco)")
        return Detection("text", "records have only free \"text\" (pretraining)")
    return None


def detect_format(path: str | Path, input_col: str | None = None) -> Detection:
    """Which format ``path`` is in, and why; TuituneError if it can't tell."""
    path = Path(path)
    ext = path.suffix.lower()
    if not path.exists():
        raise TuituneError(f"{path}: file not found")
    if path.is_dir():
        raise TuituneError(f"{path}: is a folder; give a file")
    if ext in (".xlsx", ".xlsm"):
        return Detection("xlsx", f"file extension {ext}: an Excel workbook")
    if ext in (".csv", ".tsv"):
        return Detection("csv", f"file extension {ext}: a table with a header row")
    if ext in (".txt", ".md"):
        return Detection("txt", f"file extension {ext}: plain text for pretraining, one record per paragraph")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if ext not in (".json", ".jsonl"):
        if head.startswith(b"PK"):
            return Detection("xlsx", "file starts like a zip archive (an Excel workbook)")
        old = table_kind(path, head)  # .xls, .ods: openpyxl reads .xlsx only
        if old is not None:
            raise TuituneError(f"{path}: {old[0]}, which tuitune reads only as .xlsx; ", fix=old[1], tui_fix=old[2])
        if not head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{"):
            raise TuituneError(f"{path}: can't tell the format from the extension {ext or '(none)'}; ",
                               field="format", fix=f"pass {FIELD} ({', '.join(FORMAT_NAMES)})",
                               tui_fix="rename it to .jsonl, .json, .csv, .xlsx or .txt")
    item = _peek_json(path)
    if input_col:
        return Detection("columns", f"--input-col {input_col!r} maps a field of each JSON record")
    det = detect_item(item)
    if det is None:
        keys = ", ".join(map(str, item)) if isinstance(item, dict) else type(item).__name__
        raise TuituneError(f"{path}: the first record's fields ({keys}) match no known format; ", field="input_col",
                           fix="pass --input-col/--output-col to map them, or --format",
                           tui_fix="map them from a shell: `tuitune data convert FILE --input-col FIELD "
                           "--output-col FIELD -o OUT`")
    return det


# --- mappers ---------------------------------------------------------------------------------

def map_alpaca(item: Any) -> list[dict]:
    d = need_dict(item)
    for f in ("instruction", "output"):
        if f not in d:
            raise MapError(f"no \"{f}\" field (fields: {', '.join(map(str, d))})")
    inst, extra = as_text(d["instruction"], "instruction"), as_text(d.get("input"), "input")
    turn = {"input": f"{inst}\n{extra}" if extra.strip() else inst, "output": as_text(d["output"], "output")}
    if d.get("system"):
        turn = {"system": as_text(d["system"], "system"), **turn}
    return [turn]


def map_sharegpt(item: Any, open_end: bool = False) -> list[dict]:
    return turns_from_messages(sharegpt_turns(need_dict(item)), "conversations", open_end)


def map_openai(item: Any, open_end: bool = False) -> list[dict]:
    d = need_dict(item)
    msgs = d.get("messages")
    if not isinstance(msgs, list):
        raise MapError(f"no \"messages\" list (fields: {', '.join(map(str, d))})")
    turns = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict) or "role" not in m:
            raise MapError(f"messages[{i}] has no \"role\"")
        role = {"developer": "system"}.get(m["role"], m["role"])
        turns.append((role, as_text(m.get("content"), f"messages[{i}].content")))
    return turns_from_messages(turns, "messages", open_end)


_OASST = re.compile(r"###\s*(Human|Assistant)\s*:\s?")


def map_oasst1(item: Any, open_end: bool = False) -> list[dict]:
    d = need_dict(item)
    text = as_text(d.get("text"), "text")
    parts = _OASST.split(text)
    if len(parts) < 3:
        raise MapError("\"text\" has no \"### Human:\"/\"### Assistant:\" turns")
    turns = [("user" if who == "Human" else "assistant", body.strip())
             for who, body in zip(parts[1::2], parts[2::2])]
    return turns_from_messages(turns, "text", open_end)


def map_text(item: Any) -> list[dict]:
    if isinstance(item, str):
        return [{"input": "", "output": item}]
    d = need_dict(item)
    if "text" not in d:
        raise MapError(f"no \"text\" field (fields: {', '.join(map(str, d))})")
    return [{"input": "", "output": as_text(d["text"], "text")}]


def make_columns_mapper(input_col: str, output_col: str, system_col: str | None, system: str | None):
    def map_columns(item: Any) -> list[dict]:
        d = need_dict(item)
        for f in filter(None, (input_col, output_col, system_col)):
            if f not in d:
                raise MapError(f"no field {f!r} (fields: {', '.join(map(str, d))})")
        turn = {"input": as_text(d[input_col], input_col), "output": as_text(d[output_col], output_col)}
        sys_text = as_text(d[system_col], system_col) if system_col else (system or "")
        if sys_text:
            turn = {"system": sys_text, **turn}
        return [turn]
    return map_columns


def map_gsm8k(item: Any) -> list[dict]:
    """GSM8K as a conversation (for sft): the question, and the whole worked answer ending in ``#### N``."""
    prompts.map_gsm8k(item)  # the same checks as for prompt records
    return [{"input": item["question"].strip(), "output": item["answer"].strip()}]


MAPPERS = {"xtuner": conversation_turns, "alpaca": map_alpaca, "sharegpt": map_sharegpt, "openai": map_openai,
           "oasst1": map_oasst1, "text": map_text, "gsm8k": map_gsm8k}
#: Message formats whose records may end on the user: as prompts, that last message is the prompt.
OPEN_ENDED = ("sharegpt", "openai", "oasst1")


# --- what a format converts to --------------------------------------------------------------

def target_of(fmt: str, to: str | None = None, label: str = "") -> str:
    """The kind of records converting format ``fmt`` makes: ``pairs``, ``prompts`` or ``conversations``.
    ``to`` (``--to``) None: the format's own kind (conversations for every other format); ``label``
    names the input in an error (the file and its format, or the --format given)."""
    own = "pairs" if fmt in preference.PREFERENCE_FORMATS else "prompts" if fmt == "prompts" else "conversations"
    if to is None or to == own:
        return own
    if to not in TARGETS:
        raise TuituneError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    if own == "pairs":
        raise TuituneError(f"{label}: preference pairs (for dpo/orpo) stay pairs, so --to {to} cannot use them; "
                           "leave out --to to check and copy them")
    if own == "prompts":
        raise TuituneError(f"{label}: prompt records (for grpo) hold a reference for a reward, not a reply to "
                           "learn, so --to conversations cannot use them; leave out --to to check and copy them")
    if fmt in ("text", "txt"):
        raise TuituneError(f"{label}: pretraining text has no prompt to answer, so {FIELD} cannot use it; "
                           "give conversations, alpaca, GSM8K or prompt records", field="to", flag="--to prompts")
    return to


def to_prompt_mapper(fmt: str):
    """The mapper from records of format ``fmt`` (a prompt format, or any conversation format) to prompt records."""
    if fmt in prompts.MAPPERS:
        return prompts.MAPPERS[fmt]
    if fmt not in MAPPERS or fmt == "text":
        raise TuituneError(f"format {fmt!r} cannot become prompt records; give conversations, alpaca, GSM8K "
                           "question/answer, or prompt records")
    base = MAPPERS[fmt]
    if fmt in OPEN_ENDED:
        return lambda item: prompts.from_turns(base(item, open_end=True))
    return lambda item: prompts.from_turns(base(item))


def record_mapper(fmt: str, target: str):
    """One item of JSON format ``fmt`` → one record of kind ``target`` (see :func:`target_of`)."""
    if target == "pairs":
        return preference.MAPPERS[fmt]
    if target == "prompts":
        return to_prompt_mapper(fmt)
    base = MAPPERS[fmt]
    return lambda item: {"conversation": base(item)}


def iter_paragraphs(path: Path):
    """Plain text: paragraphs separated by blank lines, with their first line number."""
    from tuitune.data.tabular import detect_encoding

    enc = detect_encoding(path)
    buf: list[str] = []
    start = 0
    with open(path, encoding=enc) as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                if not buf:
                    start = n
                buf.append(line.rstrip("\r\n"))
            elif buf:
                yield f"line {start}", "\n".join(buf)
                buf = []
    if buf:
        yield f"line {start}", "\n".join(buf)

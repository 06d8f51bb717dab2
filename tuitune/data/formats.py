"""Input formats: detection (with the reason) and mapping of one item to conversation turns.

A turn is ``{"system"?: str, "input": str, "output": str}``; the system prompt sits on
the first turn only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError

TABLE_FORMATS = ("xlsx", "csv")
JSON_FORMATS = ("xtuner", "alpaca", "sharegpt", "openai", "oasst1", "text", "columns",
                "preference", "pref_messages", "pref_text", "sharegpt_ranking")
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
}


def _preference_help() -> None:
    from tuitune.data.preference import FORMAT_HELP as PREF_HELP

    FORMAT_HELP.update(PREF_HELP)


class MapError(ValueError):
    """An item that does not fit the format; the caller adds the file and row."""


@dataclass(frozen=True)
class Detection:
    format: str
    reason: str


def _peek_json(path: Path) -> Any:
    from tuitune.data.io import iter_json_items

    for _, item in iter_json_items(path, skip_bad_lines=True):
        return item
    raise TuituneError(f"{path}: no records in the file")


def detect_item(item: Any) -> Detection | None:
    if not isinstance(item, dict):
        return None
    keys = set(item)
    shown = ", ".join(sorted(map(str, keys)))
    from tuitune.data.preference import detect as detect_preference

    pref = detect_preference(item)
    if pref is not None:
        return pref
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
        from tuitune.data.io import table_kind

        old = table_kind(path, head)  # .xls, .ods: openpyxl reads .xlsx only
        if old is not None:
            raise TuituneError(f"{path}: {old[0]}, which tuitune reads only as .xlsx; {old[1]}")
        if not head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{"):
            raise TuituneError(f"{path}: can't tell the format from the extension {ext or '(none)'}; "
                               f"pass --format ({', '.join(FORMAT_NAMES)})")
    item = _peek_json(path)
    if input_col:
        return Detection("columns", f"--input-col {input_col!r} maps a field of each JSON record")
    det = detect_item(item)
    if det is None:
        keys = ", ".join(map(str, item)) if isinstance(item, dict) else type(item).__name__
        raise TuituneError(f"{path}: the first record's fields ({keys}) match no known format; pass "
                           "--input-col/--output-col to map them, or --format")
    return det


# --- mappers ---------------------------------------------------------------------------------

def _s(value: Any, field: str) -> str:
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


def _need_dict(item: Any) -> dict:
    if not isinstance(item, dict):
        raise MapError(f"expected an object, got {type(item).__name__}")
    return item


def _pairs(turns: list[tuple[str, str]], what: str) -> list[dict]:
    """(role, text) with role in system/user/assistant → XTuner turns."""
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
    if not out:
        raise MapError(f"no assistant reply in {what}")
    return out


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                   "system": "system"}


def map_xtuner(item: Any) -> list[dict]:
    conv = _need_dict(item).get("conversation")
    if not isinstance(conv, list) or not conv:
        raise MapError("missing or empty \"conversation\" list")
    out = []
    for i, t in enumerate(conv, 1):
        if not isinstance(t, dict):
            raise MapError(f"conversation turn {i} is not an object")
        turn = {"input": _s(t.get("input"), f"conversation[{i}].input"),
                "output": _s(t.get("output"), f"conversation[{i}].output")}
        if t.get("system"):
            turn = {"system": _s(t["system"], f"conversation[{i}].system"), **turn}
        out.append(turn)
    return out


def map_alpaca(item: Any) -> list[dict]:
    d = _need_dict(item)
    for f in ("instruction", "output"):
        if f not in d:
            raise MapError(f"no \"{f}\" field (fields: {', '.join(map(str, d))})")
    inst, extra = _s(d["instruction"], "instruction"), _s(d.get("input"), "input")
    turn = {"input": f"{inst}\n{extra}" if extra.strip() else inst, "output": _s(d["output"], "output")}
    if d.get("system"):
        turn = {"system": _s(d["system"], "system"), **turn}
    return [turn]


def map_sharegpt(item: Any) -> list[dict]:
    return _pairs(sharegpt_turns(_need_dict(item)), "conversations")


def sharegpt_turns(d: dict) -> list[tuple[str, str]]:
    """A ShareGPT record's (role, text) messages, its ``system`` first."""
    conv = d.get("conversations")
    if not isinstance(conv, list):
        raise MapError(f"no \"conversations\" list (fields: {', '.join(map(str, d))})")
    turns = []
    if d.get("system"):
        turns.append(("system", _s(d["system"], "system")))
    for i, m in enumerate(conv, 1):
        if not isinstance(m, dict) or "from" not in m:
            raise MapError(f"conversations[{i}] has no \"from\"")
        role = _SHAREGPT_ROLES.get(str(m["from"]).lower())
        if role is None:
            raise MapError(f"conversations[{i}].from is {m['from']!r}; expected human, gpt or system")
        turns.append((role, _s(m.get("value"), f"conversations[{i}].value")))
    return turns


def map_openai(item: Any) -> list[dict]:
    d = _need_dict(item)
    msgs = d.get("messages")
    if not isinstance(msgs, list):
        raise MapError(f"no \"messages\" list (fields: {', '.join(map(str, d))})")
    turns = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict) or "role" not in m:
            raise MapError(f"messages[{i}] has no \"role\"")
        role = {"developer": "system"}.get(m["role"], m["role"])
        turns.append((role, _s(m.get("content"), f"messages[{i}].content")))
    return _pairs(turns, "messages")


_OASST = re.compile(r"###\s*(Human|Assistant)\s*:\s?")


def map_oasst1(item: Any) -> list[dict]:
    d = _need_dict(item)
    text = _s(d.get("text"), "text")
    parts = _OASST.split(text)
    if len(parts) < 3:
        raise MapError("\"text\" has no \"### Human:\"/\"### Assistant:\" turns")
    turns = [("user" if who == "Human" else "assistant", body.strip())
             for who, body in zip(parts[1::2], parts[2::2])]
    return _pairs(turns, "text")


def map_text(item: Any) -> list[dict]:
    if isinstance(item, str):
        return [{"input": "", "output": item}]
    d = _need_dict(item)
    if "text" not in d:
        raise MapError(f"no \"text\" field (fields: {', '.join(map(str, d))})")
    return [{"input": "", "output": _s(d["text"], "text")}]


def make_columns_mapper(input_col: str, output_col: str, system_col: str | None, system: str | None):
    def map_columns(item: Any) -> list[dict]:
        d = _need_dict(item)
        for f in filter(None, (input_col, output_col, system_col)):
            if f not in d:
                raise MapError(f"no field {f!r} (fields: {', '.join(map(str, d))})")
        turn = {"input": _s(d[input_col], input_col), "output": _s(d[output_col], output_col)}
        sys_text = _s(d[system_col], system_col) if system_col else (system or "")
        if sys_text:
            turn = {"system": sys_text, **turn}
        return [turn]
    return map_columns


MAPPERS = {"xtuner": map_xtuner, "alpaca": map_alpaca, "sharegpt": map_sharegpt, "openai": map_openai,
           "oasst1": map_oasst1, "text": map_text}
_preference_help()


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

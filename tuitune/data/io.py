"""Reading and writing our record files (JSON arrays or JSONL), atomically, and checking each record.

The standard record is XTuner's: ``{"conversation": [{"system": ..., "input": ...,
"output": ...}, ...]}``; preference pairs and prompt records are the other kinds
(:mod:`tuitune.data.records`). Files are JSON arrays or JSONL; JSONL is written by default,
UTF-8 and not ASCII-escaped, so a Chinese answer stays readable in the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tuitune.data.preference import validate_preference
from tuitune.data.records import PROMPT_SHAPE, check_context, is_preference, is_prompt_record, task_mismatch
from tuitune.errors import FIELD, TuituneError
from tuitune.fsutil import file_mode, refuse_existing


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, encoding: str = "utf-8"):
    """A text file handle whose content appears at ``path`` only when the block succeeds.

    ``tuitune.fsutil`` writes whole byte strings; a converter streams 100k records,
    so this writes a temp file beside the target and renames it into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; a data file gets what open() would give
        with os.fdopen(fd, "w", encoding=encoding, newline="\n") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def dumps_record(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, separators=(", ", ": "))


class RecordWriter:
    """Streams records to an open handle as JSONL or as a JSON array."""

    def __init__(self, fh, array: bool = False):
        self.fh = fh
        self.array = array
        self.count = 0

    def write(self, rec: dict) -> None:
        if self.array:
            self.fh.write(("[\n  " if self.count == 0 else ",\n  ") + dumps_record(rec))
        else:
            self.fh.write(dumps_record(rec) + "\n")
        self.count += 1

    def close(self) -> None:
        if self.array:
            self.fh.write("[]\n" if self.count == 0 else "\n]\n")


def wants_array(path: str | os.PathLike, output_format: str | None = None) -> bool:
    if output_format:
        if output_format not in ("jsonl", "json"):
            raise TuituneError(f"{FIELD} {output_format!r}: choose jsonl or json", field="output_format")
        return output_format == "json"
    return Path(path).suffix.lower() == ".json"


def write_records(path: str | os.PathLike, records: Iterable[dict], output_format: str | None = None,
                  force: bool = True) -> int:
    """Write ``records`` to ``path`` atomically; with ``force=False`` an existing file is refused."""
    refuse_existing(path, force)
    with atomic_writer(path) as fh:
        w = RecordWriter(fh, wants_array(path, output_format))
        for rec in records:
            w.write(rec)
        w.close()
    return w.count


# --- reading JSON and JSONL ------------------------------------------------------------

@dataclass
class BadLine:
    where: str
    reason: str


@dataclass
class JsonSource:
    """The items of a JSON array or JSONL file with where each came from."""

    path: Path
    kind: str = "jsonl"  # "jsonl" or "json"
    bad_lines: list[BadLine] = field(default_factory=list)


#: Files that hold a table, not records, by extension: what to call them in an error.
TABLE_KINDS = {".xlsx": "a spreadsheet (Excel workbook)", ".xlsm": "a spreadsheet (Excel workbook)",
               ".xls": "a spreadsheet (Excel 97-2003 workbook)", ".ods": "a spreadsheet (OpenDocument)",
               ".csv": "a table (CSV)", ".tsv": "a table (tab-separated)"}
#: Tables that ``tuitune data convert`` reads as they are (the others are saved as .xlsx first).
CONVERTIBLE = (".xlsx", ".xlsm", ".csv", ".tsv")
#: How a spreadsheet starts whatever its name: (first bytes, what it is, the fix: rename or save as .xlsx).
TABLE_MAGIC = ((b"PK\x03\x04", "a spreadsheet (a zip archive, as an Excel workbook is)", "rename"),
               (b"\xd0\xcf\x11\xe0", "a spreadsheet (Excel 97-2003 workbook)", "save"))


def table_kind(path: str | os.PathLike, head: bytes = b"") -> tuple[str, str, str] | None:
    """``(what it is, how to make records of it, the same in the TUI)`` when ``path`` is a spreadsheet
    or a CSV (by its name, or by its first bytes ``head``), else None. The CLI's fix is the
    ``tuitune data convert`` line; the TUI's, its Convert tab."""
    path = Path(path)
    ext = path.suffix.lower()
    kind, fix = TABLE_KINDS.get(ext), "save"
    if kind is None:
        kind, fix = next(((k, f) for m, k, f in TABLE_MAGIC if head.startswith(m)), (None, ""))
        if kind is None:
            return None
    out = Path("data") / f"{path.stem}.jsonl"
    xlsx = path.with_suffix(".xlsx")
    if ext in CONVERTIBLE:
        how, src = "convert it first", path
    elif fix == "rename":
        how, src = f"rename it to {xlsx.name}, then convert it", xlsx
    else:
        how, src = "save it as .xlsx (Excel or LibreOffice: Save As), then convert it", xlsx
    return kind, f"{how}: tuitune data convert {src} -o {out}", f"{how} in the Convert tab (F3)"


def refuse_table(path: Path, head: bytes = b"") -> None:
    """Raise a TuituneError when ``path`` is a table where conversation records are read: every
    verb that reads records (inspect, split, train, eval) says what it is and the convert line."""
    found = table_kind(path, head)
    if found is not None:
        raise TuituneError(f"{path}: {found[0]}, not conversation records; ", fix=found[1], tui_fix=found[2])


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TuituneError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TuituneError(f"{path}: is a folder; give a file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        refuse_table(path, data[:8])
        raise TuituneError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           "save it as UTF-8") from None


def iter_json_items(path: str | os.PathLike, skip_bad_lines: bool = False,
                    source: JsonSource | None = None) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, item)`` for each item: ``where`` is ``line N`` (JSONL) or ``record N`` (array).

    A ``.json`` file holding one document is an array (or a single object); a file whose
    first document is followed by more is read as JSONL. A syntax error raises a
    TuituneError naming the line and column; in JSONL ``skip_bad_lines`` records the line
    in ``source.bad_lines`` and goes on.
    """
    path = Path(path)
    source = source or JsonSource(path)
    refuse_table(path)
    if path.suffix.lower() == ".jsonl":
        # Stream JSONL line by line: memory stays flat however long the file is.
        if not path.is_file():
            raise TuituneError(f"{path}: " + ("is a folder; give a file" if path.exists() else "file not found"))
        with open(path, "rb") as fh:
            yield from _jsonl_items(path, enumerate(fh, 1), skip_bad_lines, source)
        return
    text = _read_text(path)
    stripped = text.lstrip()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and stripped.startswith("{"):
            lines = enumerate((l.encode("utf-8") for l in text.splitlines()), 1)
            yield from _jsonl_items(path, lines, skip_bad_lines, source)
            return
        if not stripped:
            raise TuituneError(f"{path}: file is empty") from None
        raise TuituneError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; "
                           "fix the file (a JSON array of records, or one record a line as .jsonl)") from None
    source.kind = "json"
    items = doc if isinstance(doc, list) else [doc]
    for i, item in enumerate(items, 1):
        yield f"record {i}", item


def _jsonl_items(path: Path, lines, skip_bad_lines: bool, source: JsonSource) -> Iterator[tuple[str, Any]]:
    source.kind = "jsonl"
    for lineno, raw in lines:
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            if skip_bad_lines:
                source.bad_lines.append(BadLine(f"line {lineno}", f"not UTF-8 at byte {exc.start + 1}"))
                continue
            raise TuituneError(f"{path}: line {lineno}: not UTF-8 (byte {exc.start + 1}); save the file as UTF-8",
                               field="skip_bad_lines", fix=f" or pass {FIELD}", tui_fix="") from None
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            if skip_bad_lines:
                source.bad_lines.append(BadLine(f"line {lineno}", f"invalid JSON at column {exc.colno}: {exc.msg}"))
                continue
            raise TuituneError(f"{path}: line {lineno}: invalid JSON at column {exc.colno}: {exc.msg}; ",
                               field="skip_bad_lines", fix=f"fix the line or pass {FIELD} to skip it",
                               tui_fix="fix that line in the file") from None
        yield f"line {lineno}", item


def validate_record(rec: Any, where: str, path: Path | str, task: str = "sft") -> dict:
    """Check one record (a conversation; a preference pair for dpo/orpo; a prompt record for grpo);
    return it or raise a TuituneError naming the field. ``task`` "any" takes every kind; a task
    refuses the others."""
    wrong = task_mismatch(rec, where, path, task)
    if wrong:
        raise TuituneError(wrong)
    if is_preference(rec):
        return validate_preference(rec, where, path)
    if is_prompt_record(rec):
        return validate_prompt(rec, where, path)
    if not isinstance(rec, dict):
        raise TuituneError(f"{path}: {where}: expected an object with a \"conversation\" list, got {type(rec).__name__}")
    conv = rec.get("conversation")
    if not isinstance(conv, list) or not conv:
        keys = ", ".join(map(str, rec)) or "none"
        raise TuituneError(f"{path}: {where}: missing or empty \"conversation\" list (keys: {keys}); "
                           "convert the file first with `tuitune data convert`")
    for t, turn in enumerate(conv, 1):
        if not isinstance(turn, dict):
            raise TuituneError(f"{path}: {where}: conversation turn {t} is not an object")
        for key in ("system", "input", "output"):
            val = turn.get(key)
            if val is not None and not isinstance(val, str):
                raise TuituneError(f"{path}: {where}: turn {t} field \"{key}\" is {type(val).__name__}, "
                                   "expected a string")
        if not (turn.get("output") or "").strip():
            raise TuituneError(f"{path}: {where}: turn {t} has an empty \"output\"; fill it in or remove the record")
        if task == "sft" and "input" not in turn:
            raise TuituneError(f"{path}: {where}: turn {t} has no \"input\" field")
    return rec


def validate_prompt(rec: Any, where: str, path: Path | str) -> dict:
    """Check one prompt record; return it (a numeric answer as text) or raise a TuituneError naming the field."""
    if not isinstance(rec, dict):
        raise TuituneError(f"{path}: {where}: expected an object {PROMPT_SHAPE}, got {type(rec).__name__}")
    if "prompt" not in rec:
        raise TuituneError(f"{path}: {where}: a prompt record needs \"prompt\" (fields: {', '.join(map(str, rec))}); "
                           "make prompt records with `tuitune data convert IN -o OUT --to prompts`")
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
    check_context(rec, where, path)
    return out


def iter_records(path: str | os.PathLike, skip_bad_lines: bool = False,
                 source: JsonSource | None = None, task: str = "any") -> Iterator[tuple[str, dict]]:
    path = Path(path)
    for where, item in iter_json_items(path, skip_bad_lines, source):
        yield where, validate_record(item, where, path, task=task)


def load_records(path: str | os.PathLike, skip_bad_lines: bool = False, task: str = "any") -> list[dict]:
    """Read a record file (conversations, preference pairs or prompt records); TuituneError with the file
    and line on bad input, or on a record of the wrong kind for ``task``."""
    return [rec for _, rec in iter_records(path, skip_bad_lines, task=task)]

"""``convert``: any supported input → conversation records (or prompt records, ``to="prompts"``;
preference pairs stay pairs), with a report of what happened.

Nothing is dropped silently: skipped rows carry their reason, placeholder answers and exact
duplicates are counted and only removed when asked (``drop_placeholders``, ``dedupe``).
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.data import formats as F
from tuitune.data.io import JsonSource, RecordWriter, atomic_writer, iter_json_items, wants_array
from tuitune.data.prompts import MAPPING as PROMPT_MAPPING, from_turns
from tuitune.data.records import first_question, set_system, system_of
from tuitune.errors import FIELD, Note, TuituneError

MEDQA_SYSTEM = ("You are a professional, highly experienced doctor professor. You always provide accurate, "
                "comprehensive, and detailed answers based on the patients' questions.")
MEDQA_COLUMNS = ("Question", "Focus (Drug)", "Question Type", "Answer", "Section Title", "URL")

PRESETS = {"medqa": dict(sheet="DrugQA", input_col="Question", output_col="Answer", system=MEDQA_SYSTEM)}

#: Answers that stand for "no answer" in real sheets (compared case-insensitively, trimmed).
PLACEHOLDERS = frozenset({"n/a", "na", "n.a.", "none", "null", "nan", "no answer", "no answers",
                          "no answer.", "no answers.", "tbd", "todo", "-", "--", "—", "?", "无", "暂无"})

_INPUT_GUESS = ("question", "input", "instruction", "prompt", "query", "问题", "提问", "q")
_OUTPUT_GUESS = ("answer", "output", "response", "completion", "reply", "答案", "回答", "a")
_SYSTEM_GUESS = ("system", "system prompt", "system_prompt", "系统")

EXAMPLES_KEPT = 20  # how many row numbers a report lists per kind


def is_placeholder(text: str) -> bool:
    return len(text) <= 40 and " ".join(text.split()).casefold() in PLACEHOLDERS


def normalize_key(text: str) -> str:
    """Text compared as "the same question": NFKC (nbsp → space), whitespace collapsed, casefolded."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _digest(*parts: str) -> bytes:
    """16 bytes standing for the exact text (kept per record instead of the text itself)."""
    return hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class Issue:
    where: str
    reason: str


@dataclass
class Report:
    source: str
    output: str | None = None
    format: str = ""
    reason: str = ""
    target: str = "conversations"       # what was written: conversations, pairs or prompts
    mapping: str = ""
    sheet: str | None = None
    encoding: str | None = None
    total: int = 0                      # items or rows read (excluding the header)
    kept: int = 0
    skipped: list[Issue] = field(default_factory=list)
    skipped_count: int = 0
    placeholders: list[Issue] = field(default_factory=list)
    placeholder_count: int = 0
    placeholders_dropped: bool = False
    duplicates: list[Issue] = field(default_factory=list)
    duplicate_count: int = 0
    duplicates_dropped: bool = False
    repeated_inputs: int = 0            # questions that appear with more than one answer
    bad_lines: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, where: str, reason: str) -> None:
        lst: list = getattr(self, kind)
        setattr(self, _COUNT[kind], getattr(self, _COUNT[kind]) + 1)
        if len(lst) < EXAMPLES_KEPT:
            lst.append(Issue(where, reason))

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"format: {self.format} ({self.reason})"]
        if self.mapping:
            out.append(f"mapping: {self.mapping}")
        if self.encoding:
            out.append(f"encoding: {self.encoding.replace('-sig', '')}")
        out.extend(n.prefixed("note: ") if isinstance(n, Note) else f"note: {n}" for n in self.notes)
        dest = f" → {self.output}" if self.output else ""
        kind = " as prompt records (for grpo)" if self.target == "prompts" else ""
        out.append(f"kept {self.kept} of {self.total} records{kind}{dest}")
        if self.skipped_count:
            out.append(f"skipped {self.skipped_count}:")
            out.extend(f"  {i.where}: {i.reason}" for i in self.skipped)
            if self.skipped_count > len(self.skipped):
                out.append(f"  ... and {self.skipped_count - len(self.skipped)} more")
        for kind, count, dropped, flag in (("placeholders", self.placeholder_count, self.placeholders_dropped,
                                            "drop_placeholders"),
                                           ("duplicates", self.duplicate_count, self.duplicates_dropped, "dedupe")):
            if not count:
                continue
            what = "placeholder answers" if kind == "placeholders" else "exact duplicates"
            verdict = "dropped" if dropped else f"kept; {FIELD} drops them"
            out.append(Note(f"{what}: {count} ({verdict}):", field=flag))
            issues = getattr(self, kind)
            out.extend(f"  {i.where}: {i.reason}" for i in issues)
            if count > len(issues):
                out.append(f"  ... and {count - len(issues)} more")
        if self.bad_lines:
            out.append(f"bad lines skipped: {len(self.bad_lines)}:")
            out.extend(f"  {i.where}: {i.reason}" for i in self.bad_lines)
        if self.repeated_inputs:
            n = self.repeated_inputs
            out.append(Note(f"{n} question{'s' if n != 1 else ''} appear{'s' if n == 1 else ''} more than once with "
                            f"different answers; split with {FIELD} to keep each on one side",
                            field="group_by_input", flag="--group-by input"))
        return out


_COUNT = {"skipped": "skipped_count", "placeholders": "placeholder_count", "duplicates": "duplicate_count"}


def _guess(header: list[str], names: tuple[str, ...]) -> str | None:
    low = {h.strip().casefold(): h for h in header if h.strip()}
    for n in names:
        if n in low:
            return low[n]
    return None


def _col_index(path: Path, header: list[str], col: str, sheet: str | None) -> int:
    if col in header:
        return header.index(col)
    where = f"sheet {sheet!r}" if sheet else "the header row"
    cols = ", ".join(repr(h) for h in header if h.strip())
    raise TuituneError(f"{path}: no column {col!r} in {where}; columns: {cols}")


def resolve_preset(preset: str | None) -> dict:
    if not preset:
        return {}
    if preset not in PRESETS:
        raise TuituneError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    return dict(PRESETS[preset])


def convert(src: str | os.PathLike, out: str | os.PathLike | None = None, *, format: str | None = None,
            preset: str | None = None, sheet: str | None = None, input_col: str | None = None,
            output_col: str | None = None, system_col: str | None = None, system: str | None = None,
            drop_placeholders: bool = False, dedupe: bool = False, skip_bad_lines: bool = False,
            output_format: str | None = None, force: bool = False, to: str | None = None,
            progress: Callable[[int, int | None], None] | None = None,
            cancelled: Callable[[], bool] | None = None) -> Report:
    """Convert ``src`` to conversation records written to ``out`` (JSONL unless .json); ``to="prompts"``
    makes prompt records (for grpo) instead; preference formats make pairs (see ``formats.target_of``).

    With ``out=None`` nothing is written (a dry run that still builds the report). An
    existing ``out`` is refused unless ``force`` (the CLI's ``--force``; the TUI asks first).
    Raises TuituneError (and leaves no output file) on input it can't read.
    """
    src = Path(src)
    if out is not None and Path(out).resolve() == src.resolve():
        raise TuituneError(f"{out}: is the input file; choose another output path")
    if out is not None:
        from tuitune.fsutil import refuse_existing

        refuse_existing(out, force)
    opts = resolve_preset(preset)
    user_sheet = sheet
    sheet = sheet or opts.get("sheet")
    input_col = input_col or opts.get("input_col")
    output_col = output_col or opts.get("output_col")
    system = system if system is not None else opts.get("system")
    if system_col and system:
        raise TuituneError(f"{FIELD} and {FIELD} both set the system prompt; pass one", field=("system_col", "system"))

    if format:
        if format not in F.FORMAT_NAMES:
            raise TuituneError(f"--format {format!r}: choose one of {', '.join(F.FORMAT_NAMES)}")
        det = F.Detection(format, "forced with --format")
        if not src.exists():
            raise TuituneError(f"{src}: file not found")
    else:
        det = F.detect_format(src, input_col)
    to = F.target_of(det.format, to, f"--format {format}" if format else f"{src} ({det.format})")
    report = Report(source=str(src), format=det.format, reason=det.reason, target=to)
    if det.format == "gsm8k" and to == "conversations":
        report.notes.append(Note("GSM8K → conversations (the question → input, the worked answer → output) for sft; "
                                 f"for grpo, convert with {FIELD} (the final answer after #### becomes the reference)",
                                 field="to", flag="--to prompts"))
    if preset:
        report.notes.append(f"preset {preset}: sheet {sheet!r}, {input_col} → input, {output_col} → output, "
                            "fixed system prompt")

    # Each source yields (where, item); map(item) gives turns or raises MapError.
    table = None
    js = None
    strict = True  # structured files stop at a bad record; tables skip bad rows and report them
    if det.format in F.TABLE_FORMATS:
        from tuitune.data.tabular import NoSheet, open_csv, open_xlsx

        if det.format == "csv" and user_sheet:
            raise TuituneError(f"{src}: {FIELD} {user_sheet!r} applies to .xlsx files only; a csv has one table",
                               field="sheet")
        try:
            table = open_xlsx(src, sheet) if det.format == "xlsx" else open_csv(src)
        except NoSheet as exc:
            if user_sheet or not preset:
                raise
            raise TuituneError(f"{src}: no sheet {sheet!r}, which --preset {preset} reads; sheets: "
                               f"{', '.join(exc.names)}; name the sheet with --sheet (the preset still maps "
                               f"{input_col!r} and {output_col!r}), or drop --preset {preset} and map the "
                               "columns with --input-col and --output-col") from None
        strict = False
        report.sheet, report.encoding = table.sheet, table.encoding
        header = table.header
        if not input_col:
            input_col = _guess(header, _INPUT_GUESS)
        if not output_col:
            output_col = _guess(header, _OUTPUT_GUESS)
        if not (input_col and output_col):
            table.close()
            cols = ", ".join(repr(h) for h in header if h.strip())
            raise TuituneError(f"{src}: can't tell which columns hold the question and the answer; ",
                               field=("input_col", "output_col"), fix=f"pass {FIELD} and {FIELD} (columns: {cols})",
                               tui_fix=f"pick them in the {FIELD} and {FIELD} lists (columns: {cols})")
        try:
            ii = _col_index(src, header, input_col, table.sheet)
            oi = _col_index(src, header, output_col, table.sheet)
        except TuituneError as exc:
            table.close()
            if not preset:
                raise
            raise TuituneError(f"{exc} (--preset {preset} maps {input_col!r} and {output_col!r}); name the "
                               f"columns with --input-col and --output-col, or drop --preset {preset}") from None
        si = _col_index(src, header, system_col, table.sheet) if system_col else None
        if not system_col and not preset and all(c in header for c in MEDQA_COLUMNS) and system is None:
            report.notes.append(Note(f"the columns are MedQA's; {FIELD} adds the tutorial's system prompt",
                                     field="preset", flag="--preset medqa"))
        report.mapping = (f"{input_col!r} → input, {output_col!r} → output"
                          + (f", {system_col!r} → system" if system_col else "")
                          + (", fixed system prompt" if system else "")
                          + (f" (sheet {table.sheet!r}, header on row {table.header_row})" if table.sheet else
                             f" (header on row {table.header_row})"))
        in_name, out_name = input_col, output_col

        def items():
            for n, cells in table.rows():
                yield f"row {n}", cells

        text = table.text

        def map_item(cells):
            get = lambda i: text(cells[i]) if i is not None and i < len(cells) else ""  # noqa: E731
            q, a = get(ii), get(oi)
            if not q.strip() and not a.strip() and not any(text(c).strip() for c in cells):
                raise F.MapError("empty row")
            if not q.strip():
                raise F.MapError(f"empty {in_name!r}")
            if not a.strip():
                raise F.MapError(f"empty {out_name!r}")
            turn = {"input": q, "output": a}
            sys_text = get(si) if si is not None else (system or "")
            if sys_text.strip():
                turn = {"system": sys_text, **turn}
            return [turn]
        total_hint = (table.total_rows - table.header_row) if table.total_rows else None
    elif det.format == "txt":
        def items():
            yield from F.iter_paragraphs(src)
        map_item = F.map_text
        report.mapping = "each paragraph → one pretraining record"
        total_hint = None
    else:
        js = JsonSource(src)
        if det.format == "columns":
            if not (input_col and output_col):
                raise TuituneError("--format columns needs --input-col and --output-col")
            map_item = F.make_columns_mapper(input_col, output_col, system_col, system)
            report.mapping = f"{input_col!r} → input, {output_col!r} → output"
        else:
            map_item = F.record_mapper(det.format, to)
            kind = PROMPT_MAPPING.get(det.format, PROMPT_MAPPING[None]) if to == "prompts" else ""
            fixed = ("fixed system prompt on the first turn" if to == "conversations" else "fixed system prompt") \
                if system else ""
            report.mapping = ", ".join(filter(None, (kind, fixed)))

        def items():
            yield from iter_json_items(src, skip_bad_lines, js)
        total_hint = None

    if to == "prompts":  # a table's or --input-col's mapping, in a prompt record's fields
        report.mapping = report.mapping.replace("→ input", "→ prompt").replace("→ output", "→ answer")
    seen: dict[bytes, str] = {}
    answers_by_q: dict[int, bytes] = {}
    repeated: set[int] = set()
    writer_ctx = atomic_writer(out) if out is not None else None
    try:
        fh = writer_ctx.__enter__() if writer_ctx else None
        writer = RecordWriter(fh, wants_array(out, output_format)) if fh else None
        for where, item in items():
            report.total += 1
            if progress and report.total % 500 == 0:
                progress(report.total, total_hint)
                if cancelled and cancelled():
                    raise TuituneError("cancelled; no output written")
            try:
                rec = map_item(item)
                if isinstance(rec, list):  # a table's, text's or --input-col's turns
                    rec = from_turns(rec) if to == "prompts" else {"conversation": rec}
                if system:
                    rec = set_system(rec, system)
            except F.MapError as exc:
                if strict:  # the fix: the mapper's own (after "; "), else fixing the record or the format
                    fix = "" if "; " in str(exc) else "; fix it or use --format to pick another format"
                    raise TuituneError(f"{src}: {where}: {exc}", fix=fix, tui_fix=fix and "; fix it in the file") from None
                report.add("skipped", where, str(exc))
                continue
            if to != "conversations":
                answers = [rec["chosen"], rec["rejected"]] if to == "pairs" else [rec["answer"]] if rec.get("answer") \
                    else []
                key, question = _digest(json.dumps(rec, sort_keys=True, ensure_ascii=False)), first_question(rec)
            else:
                turns = rec["conversation"]
                if det.format not in ("text", "txt"):
                    for t, turn in enumerate(turns, 1):
                        if not turn["output"].strip():
                            if strict:
                                raise TuituneError(f"{src}: {where}: turn {t} has an empty output; fill it in or "
                                                   "remove the record")
                            report.add("skipped", where, "empty output")
                            break
                    if any(not t["output"].strip() for t in turns):
                        continue
                elif not turns[0]["output"].strip():
                    report.add("skipped", where, "empty text")
                    continue
                answers = [t["output"] for t in turns]
                key = _digest(*(f"{t.get('system', '')}\x01{t['input']}\x01{t['output']}" for t in turns))
                question = turns[0]["input"]
            placeholder = [a for a in answers if is_placeholder(a)]
            if placeholder:
                report.add("placeholders", where, f"answer {placeholder[0].strip()!r}")
                if drop_placeholders:
                    continue
            first = seen.get(key)
            if first is not None:
                report.add("duplicates", where, f"same as {first}")
                if dedupe:
                    continue
            else:
                seen[key] = where
                # For the report only (how many questions have several answers): a hash will do.
                qk = hash(normalize_key(question)) if question.strip() else None
                if qk is not None:
                    prev = answers_by_q.get(qk)
                    if prev is None:
                        answers_by_q[qk] = key
                    elif prev != key:
                        repeated.add(qk)
            if writer:
                writer.write(rec)
            report.kept += 1
        report.repeated_inputs = len(repeated)
        report.placeholders_dropped = drop_placeholders and report.placeholder_count > 0
        report.duplicates_dropped = dedupe and report.duplicate_count > 0
        if js is not None:
            report.bad_lines = [Issue(b.where, b.reason) for b in js.bad_lines]
        if report.kept == 0:
            why = "; ".join(f"{i.where}: {i.reason}" for i in report.skipped[:3])
            raise TuituneError(f"{src}: no records kept out of {report.total}" + (f" ({why})" if why else "")
                               + "; check the column mapping or the file")
        if writer:
            writer.close()
            writer_ctx.__exit__(None, None, None)
            writer_ctx = None
            report.output = str(out)
        if progress:
            progress(report.total, report.total)
    except BaseException as exc:
        if writer_ctx:
            writer_ctx.__exit__(type(exc), exc, exc.__traceback__)
        raise
    finally:
        if table is not None:
            table.close()
    return report


def preview(src: str | os.PathLike, *, format: str | None = None, sheet: str | None = None,
            limit: int = 20) -> dict:
    """What the Data screen shows for a file: detected format and the first rows.

    ``{"format", "reason", "columns": [...], "rows": [[...]], "sheets": [...], "sheet"}``;
    for JSON formats ``columns`` are ``system``/``input``/``output`` of the first turn (a pair's prompt
    and chosen answer, a prompt record's prompt and reference answer).
    """
    src = Path(src)
    det = F.Detection(format, "forced") if format else F.detect_format(src)
    res = {"format": det.format, "reason": det.reason, "columns": [], "rows": [], "sheets": [], "sheet": None}
    if det.format in F.TABLE_FORMATS:
        from tuitune.data.tabular import open_csv, open_xlsx

        t = open_xlsx(src, sheet) if det.format == "xlsx" else open_csv(src)
        try:
            res.update(columns=list(t.header), sheets=list(t.sheets), sheet=t.sheet, encoding=t.encoding,
                       header_row=t.header_row)
            for _, raw in t.rows():
                cells = [t.text(v) for v in raw[: len(t.header)]]
                res["rows"].append(cells + [""] * (len(t.header) - len(cells)))
                if len(res["rows"]) >= limit:
                    break
        finally:
            t.close()
        res["guess"] = {"input": _guess(t.header, _INPUT_GUESS), "output": _guess(t.header, _OUTPUT_GUESS),
                        "system": _guess(t.header, _SYSTEM_GUESS)}
        return res
    res["columns"] = ["where", "system", "input", "output"]
    it = F.iter_paragraphs(src) if det.format == "txt" else iter_json_items(src, skip_bad_lines=True)
    fmt = det.format if det.format in F.JSON_FORMATS and det.format != "columns" else "text"
    mapper = F.record_mapper(fmt, F.target_of(fmt))
    for where, item in it:
        try:
            rec = mapper(item)
        except F.MapError as exc:
            res["rows"].append([where, "", f"(bad record: {exc})", ""])
        else:
            turns = rec.get("conversation") or []
            if "prompt" in rec:  # a pair (its chosen answer) or a prompt record (its reference answer)
                shown = [system_of(rec) or "", rec["prompt"], rec.get("chosen", rec.get("answer")) or ""]
                more = f"  (after {len(turns)} earlier turns)" if turns else ""
            else:
                shown = [turns[0].get("system", ""), turns[0]["input"], turns[0]["output"]]
                more = f"  (+{len(turns) - 1} turns)" if len(turns) > 1 else ""
            res["rows"].append([where, *shown[:2], shown[2] + more])
        if len(res["rows"]) >= limit:
            break
    return res

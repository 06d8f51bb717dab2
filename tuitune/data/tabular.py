"""Streaming readers for spreadsheets: xlsx through openpyxl's read-only mode, csv with
encoding detection. Rows come out as lists of strings, exactly as the user wrote them.
"""

from __future__ import annotations

import array
import codecs
import csv
import datetime as _dt
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tuitune.errors import FIELD, TuituneError

CSV_ENCODINGS = ("utf-8-sig", "gbk")


def cell_text(value) -> str:
    """A cell's value as text without inventing anything: ints stay ``3``, not ``3.0``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        if isinstance(value, _dt.datetime) and value.time() == _dt.time(0):
            return value.date().isoformat()
        return value.isoformat()
    return str(value)


class SharedRef(int):
    """A shared-string index standing in for the text until a column is actually read."""

    __slots__ = ()


class DiskStrings:
    """An xlsx shared-string table kept in a temp file, not in memory.

    openpyxl's read-only mode streams the sheet but loads every shared string into a
    Python list first; for a 100k-row sheet of long answers that list is most of the
    memory. No library offers a disk-backed table, so this one stores the UTF-8 bytes
    in an unlinked temp file and only an offset array (8 bytes a string) in memory.
    The sheet parser gets a :class:`SharedRef` per cell; :meth:`text` reads the string
    only for the cells a conversion uses (question and answer, not the URL).
    """

    def __init__(self):
        self._fh = tempfile.TemporaryFile()
        self._offsets = array.array("Q", [0])
        self._buf: list[bytes] = []
        self._pos = 0
        self._pending = 0
        self._fd = self._fh.fileno()
        self._last = (-1, "")

    def append(self, text: str) -> None:
        b = text.encode("utf-8")
        self._buf.append(b)
        self._pos += len(b)
        self._offsets.append(self._pos)
        self._pending += len(b)
        if self._pending >= 1 << 18:  # write in 256 KB chunks
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._fh.write(b"".join(self._buf))
            self._fh.flush()
            self._buf.clear()
            self._pending = 0

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> SharedRef:
        return SharedRef(i)

    def text(self, i: int) -> str:
        if self._last[0] == i:
            return self._last[1]
        start, end = self._offsets[i], self._offsets[i + 1]
        s = os.pread(self._fd, end - start, start).decode("utf-8") if end > start else ""
        self._last = (i, s)
        return s

    def close(self) -> None:
        self._fh.close()


def _read_disk_strings(src) -> DiskStrings:
    # The same parse as openpyxl.reader.strings.read_string_table, into DiskStrings. A plain
    # <si><t>text</t></si> (nearly every string) is read straight from the element; rich
    # text (runs, phonetics) goes through openpyxl's Text model as before.
    from openpyxl.cell.text import Text
    from openpyxl.xml.constants import SHEET_MAIN_NS
    from openpyxl.xml.functions import iterparse

    strings = DiskStrings()
    tag = "{%s}si" % SHEET_MAIN_NS
    t_tag = "{%s}t" % SHEET_MAIN_NS
    for _, node in iterparse(src):
        if node.tag == tag:
            if len(node) == 1 and node[0].tag == t_tag and not len(node[0]):
                text = node[0].text or ""
            else:
                text = Text.from_tree(node).content
            strings.append(text.replace("x005F_", "") if "x005F_" in text else text)
            node.clear()
    strings.flush()
    return strings


def open_workbook(path: Path):
    """openpyxl in read-only, values-only mode with the shared strings on disk."""
    from openpyxl.reader.excel import ExcelReader, SHARED_STRINGS

    class _Reader(ExcelReader):
        def read_strings(self):
            ct = self.package.find(SHARED_STRINGS)
            if ct is not None:
                with self.archive.open(ct.PartName[1:]) as src:
                    self.shared_strings = _read_disk_strings(src)

    if not path.exists():
        raise TuituneError(f"{path}: file not found")
    try:
        reader = _Reader(str(path), read_only=True, data_only=True, keep_links=False)
        reader.read()
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise TuituneError(f"{path}: file not found") from None
        raise TuituneError(f"{path}: not an xlsx workbook ({type(exc).__name__}: {exc}); "
                           "open it in Excel and save as .xlsx, or if it is text rename it to .csv") from None
    except Exception as exc:  # openpyxl raises InvalidFileException and others for bad files
        raise TuituneError(f"{path}: not a readable xlsx workbook ({type(exc).__name__}: {exc}); "
                           "open it in Excel and save it again as .xlsx") from None
    return reader.wb, reader.shared_strings


class NoSheet(TuituneError):
    """The workbook has no sheet by that name (``names`` are the ones it has)."""

    def __init__(self, path: Path, sheet: str, names: tuple[str, ...]):
        super().__init__(f"{path}: no sheet {sheet!r}; sheets: {', '.join(names)}; ", field="sheet",
                         fix=f"pick one with {FIELD}", tui_fix=f"pick one in the {FIELD} list")
        self.names = names


@dataclass
class Table:
    """A sheet or csv: its header and a way to stream its data rows."""

    path: Path
    header: list[str]
    header_row: int                     # 1-based row number of the header
    rows: Callable[[], Iterator[tuple[int, list[str]]]]  # (row number, cells as text)
    sheet: str | None = None
    sheets: tuple[str, ...] = ()
    total_rows: int | None = None       # a size estimate for progress, if known
    encoding: str | None = None
    close: Callable[[], None] = lambda: None
    text: Callable[[object], str] = cell_text   # raw cell value → text as written


def _trim(cells: list[str]) -> list[str]:
    while cells and cells[-1] == "":
        cells.pop()
    return cells


def open_xlsx(path: str | os.PathLike, sheet: str | None = None) -> Table:
    path = Path(path)
    wb, strings = open_workbook(path)
    names = tuple(wb.sheetnames)

    def close():
        wb.close()
        if isinstance(strings, DiskStrings):
            strings.close()

    def text(value) -> str:
        if type(value) is SharedRef:
            return strings.text(value)
        return cell_text(value)

    if sheet is not None and sheet not in names:
        close()
        raise NoSheet(path, sheet, names)
    header, header_row = None, 0
    # No sheet named: the first one with rows (a workbook often starts with an empty Sheet1).
    for name in [sheet] if sheet is not None else names:
        header, header_row = _header(wb[name], text)
        if header is not None:
            sheet = name
            break
    if header is None:
        others = [n for n in names if n != sheet and _header(wb[n], text)[0] is not None]
        close()
        if not others:
            what = (f"its only sheet, {names[0]!r}, is empty" if len(names) == 1 else
                    f"its sheets {', '.join(map(repr, names))} are all empty")
            raise TuituneError(f"{path}: the workbook has no rows ({what}); fill in a header row and "
                               "data rows, or pick another file")
        raise TuituneError(f"{path}: sheet {sheet!r} is empty; ", field="sheet",
                           fix=f"pick another with {FIELD} (sheets with rows: {', '.join(others)})",
                           tui_fix=f"pick another in the {FIELD} list (sheets with rows: {', '.join(others)})")
    ws = wb[sheet]
    total = ws.max_row if isinstance(ws.max_row, int) else None

    def rows():
        # iter_rows reads the sheet's XML once; start after the header. Cells stay raw
        # (numbers, SharedRef): Table.text turns the ones a caller needs into text.
        for n, row in enumerate(ws.iter_rows(min_row=header_row + 1, values_only=True), header_row + 1):
            yield n, row

    return Table(path, header, header_row, rows, sheet, names, total, None, close, text)


def _header(ws, text) -> tuple[list[str] | None, int]:
    """A sheet's header (its first row with text) and that row's number; (None, 0) when empty."""
    for n, row in enumerate(ws.iter_rows(values_only=True), 1):
        cells = _trim([text(v) for v in row])
        if any(c.strip() for c in cells):
            return cells, n
    return None, 0


def detect_encoding(path: Path) -> str:
    """The first of utf-8 (with or without BOM) and gbk that decodes the whole file."""
    failures = []
    for enc in CSV_ENCODINGS:
        dec = codecs.getincrementaldecoder(enc)("strict")
        offset = 0
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    dec.decode(chunk)
                    offset += len(chunk)
                dec.decode(b"", final=True)
            return enc
        except UnicodeDecodeError as exc:
            failures.append(f"{enc.replace('-sig', '')} fails at byte {offset + exc.start}")
    raise TuituneError(f"{path}: text is neither UTF-8 nor GBK ({'; '.join(failures)}); "
                       "save it as UTF-8 CSV and try again")


def open_csv(path: str | os.PathLike, sheet: str | None = None) -> Table:
    path = Path(path)
    if not path.exists():
        raise TuituneError(f"{path}: file not found")
    enc = detect_encoding(path)
    with open(path, encoding=enc, newline="") as fh:
        sample = fh.read(64 * 1024)
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    if path.suffix.lower() == ".csv":
        try:
            delim = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t").delimiter
        except csv.Error:
            pass
    size = path.stat().st_size

    def reader():
        fh = open(path, encoding=enc, newline="")
        return fh, csv.reader(fh, delimiter=delim)

    fh, rd = reader()
    header, header_row = None, 0
    try:
        for n, row in enumerate(rd, 1):
            if any(c.strip() for c in row):
                header, header_row = _trim(list(row)), n
                break
    except csv.Error as exc:
        raise TuituneError(f"{path}: line {rd.line_num}: {exc}") from None
    finally:
        fh.close()
    if header is None:
        raise TuituneError(f"{path}: the file is empty; it needs a header row and data rows")

    def rows():
        # Row numbers count records as a spreadsheet shows them (a cell may span lines).
        fh, rd = reader()
        with fh:
            try:
                for n, row in enumerate(rd, 1):
                    if n > header_row:
                        yield n, list(row)
            except csv.Error as exc:
                raise TuituneError(f"{path}: line {rd.line_num}: {exc}") from None

    return Table(path, header, header_row, rows, None, (), max(1, size // 200), enc, text=str)


def open_table(path: str | os.PathLike, sheet: str | None = None) -> Table:
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return open_xlsx(path, sheet)
    if sheet:
        raise TuituneError(f"{path}: {FIELD} applies to .xlsx files only", field="sheet")
    return open_csv(path)


def list_sheets(path: str | os.PathLike) -> list[str]:
    wb, strings = open_workbook(Path(path))
    try:
        return list(wb.sheetnames)
    finally:
        wb.close()
        if isinstance(strings, DiskStrings):
            strings.close()

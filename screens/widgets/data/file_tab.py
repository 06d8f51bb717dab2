"""The Data step's File tab: the workspace's files on the left; the picked file's detected
format and its first rows on the right."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, DirectoryTree, Static
from textual.worker import Worker, WorkerState

from screens.widgets.data.filetree import DataFileTree
from screens.widgets.data.tab_form import labels, rel, say
from screens.workers import failure

CELL_WIDTH = 28


def _cell(text: str, width: int = CELL_WIDTH) -> str:
    s = text.replace("\r", "").replace("\n", "⏎").replace("\t", "→")
    return s if len(s) <= width else s[: width - 1] + "…"


class FilePane(Horizontal):
    """Enter on a file previews it (in a thread worker) and posts :class:`Previewed`."""

    @dataclass
    class Previewed(Message):
        """``path`` was read: its ``preview`` (format, sheets, columns, rows), or None when it could not be."""

        path: Path
        preview: dict | None
        #: Why it could not be read (in this step's words), and the sheet that was asked for (None: the default).
        error: str | None = None
        sheet: str | None = None

    def __init__(self, root: Path, **kwargs):
        super().__init__(**kwargs)
        self.root = root
        self.source: Path | None = None  # the file picked last
        self._sheet: str | None = None  # the sheet asked for last

    def compose(self) -> ComposeResult:
        tree = DataFileTree(self.root, id="data-tree")
        tree.tooltip = "The workspace's files. Arrows move, Enter opens a folder or picks a file."
        yield tree
        with Vertical(id="file-info"):
            yield Static("Pick a file on the left (Enter).", id="preview-result")
            table = DataTable(id="data-preview", zebra_stripes=True, cursor_type="row")
            table.tooltip = "The first rows as read, with newlines shown as ⏎ and tabs as →."
            yield table

    @on(DirectoryTree.FileSelected, "#data-tree")
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.pick(event.path)

    def pick(self, path: Path, sheet: str | None = None) -> None:
        """Select ``path`` as the source and preview it."""
        self.source = Path(path)
        self._say(f"Reading {rel(self.root, self.source)} …")
        self.load_preview(self.source, sheet)

    def _say(self, text: Text | str, error: bool = False) -> None:
        say(self.query_one("#preview-result", Static), text, error)

    def load_preview(self, path: Path, sheet: str | None) -> None:
        """Read ``path`` (its ``sheet``; None: the default) in a worker; :class:`Previewed` follows."""
        self._sheet = sheet
        self._read(path, sheet)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-preview", name="preview",
          description="reading the file")
    def _read(self, path: Path, sheet: str | None):
        from tuitune.data.convert import preview

        return path, preview(path, sheet=sheet, limit=30)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if (error := failure(event, labels("preview"))) is not None:
            error = error.replace(f"{self.root}/", "")  # paths as the tree shows them
            self._say(error, error=True)
            self.query_one("#data-preview", DataTable).clear(columns=True)
            self.post_message(self.Previewed(self.source, None, error, self._sheet))
        elif event.state == WorkerState.SUCCESS and not event.worker.is_cancelled:
            self._show(*event.worker.result)

    def _show(self, src: Path, res: dict) -> None:
        extra = ""
        if res.get("sheet"):
            extra = f" · sheet {res['sheet']} of {', '.join(res['sheets'])}"
        if res.get("encoding"):
            extra += f" · {res['encoding'].replace('-sig', '')}"
        self._say(Text.assemble((rel(self.root, src), "bold"), "\n", ("format: ", "dim"), (res["format"], "bold cyan"),
                                f" — {res['reason']}{extra}"))
        table = self.query_one("#data-preview", DataTable)
        table.clear(columns=True)
        table.add_columns(*[_cell(c, 20) or "·" for c in res["columns"]])
        for row in res["rows"]:
            table.add_row(*[_cell(c) for c in row[: len(res["columns"])]])
        self.post_message(self.Previewed(src, res))

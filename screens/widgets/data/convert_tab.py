"""The Data step's Convert tab: map a file's columns (or take its format as it is) and write
conversations, or prompt records for grpo (Records), with a progress bar and the engine's report
(rows skipped and why)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, ProgressBar, Select, Static
from textual.worker import get_current_worker

from screens.widgets.data.tab_form import DataForm, field_row, words
from screens.widgets.controls import Toggle
from tuitune.fsutil import next_free_path

TABULAR = ("xlsx", "csv")  # the formats with columns to map
#: Report lines that say what was done; the others (a note, a skipped row) are warnings.
PLAIN = ("  ", "format", "mapping", "note", "encoding")


class ConvertForm(DataForm):
    """``set_source`` gives it the picked file and its preview; ``run`` converts it."""

    TAB, RUN = "convert", "conv-run"
    TIPS = {
        "conv-sheet": "The sheet to read (xlsx only).",
        "conv-input": "The column holding the user's question: it becomes each record's input.",
        "conv-output": "The column holding the answer: it becomes the output the model learns.",
        "conv-system-col": "Optional: a column with a per-row system prompt.",
        "conv-system": "One system prompt put on the first turn of every record.",
        "conv-drop": "Drop records whose answer is a placeholder such as n/a or 'No answers'. They are "
                     "reported either way.",
        "conv-dedupe": "Drop exact duplicate records (reported either way).",
        "conv-preset": "The tutorial's MedQA mapping: sheet DrugQA, Question → input, Answer → output, "
                       "and its doctor system prompt.",
        "conv-to": "What to write: conversations (the question → input, the answer → output) to learn answers "
                   "(sft), or prompt records for grpo: the last question is the prompt and its answer the reference "
                   "a reward checks (GSM8K: the number after ####); earlier turns and the system prompt stay.",
        "conv-out": "Where to write the records: .jsonl (one a line) or .json (an array). Relative to the "
                    "workspace.",
    }

    @dataclass
    class Progress(Message):
        """Records converted so far, of ``total`` (None: not known yet); only the newest counts."""

        done: int
        total: int | None

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ConvertForm.Progress)

    @dataclass
    class SheetPicked(Message):
        """Another sheet of the source was chosen: its preview (and columns) are needed."""

        sheet: str

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.source: Path | None = None
        self.preview: dict | None = None
        self.unreadable: str | None = None  # why the source's preview failed (in this step's words)
        self._preset_pending = False  # the MedQA preset picked its sheet: set its columns when read

    def compose(self) -> ComposeResult:
        yield Static("No file picked yet (F2).", id="conv-source", classes="hint")
        yield field_row("Sheet", Select([], prompt="sheet", id="conv-sheet", compact=True))
        yield field_row("Question", Select([], prompt="question column → input", id="conv-input", compact=True))
        yield field_row("Answer", Select([], prompt="answer column → output", id="conv-output", compact=True))
        yield field_row("System col", Select([], prompt="(none)", id="conv-system-col", compact=True))
        yield field_row("System", Input(placeholder="system prompt for every record (optional)", id="conv-system",
                                        compact=True))
        with Horizontal(classes="field"):
            yield Toggle("drop placeholders", id="conv-drop", compact=True)
            yield Toggle("dedupe", id="conv-dedupe", compact=True)
            yield Button("MedQA preset", id="conv-preset", compact=True)
        yield field_row("Records", Select([("conversations (sft)", "conversations"),
                                           ("prompt records (grpo)", "prompts")], value="conversations",
                                          allow_blank=False, id="conv-to", compact=True))
        yield field_row("Output", Input(placeholder="data/out.jsonl", id="conv-out", compact=True))
        with Horizontal(classes="field"):
            yield Button("Convert", id="conv-run", variant="primary", compact=True)
            yield ProgressBar(id="conv-progress", show_eta=False)
        yield Static("", id="convert-result")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#conv-progress", ProgressBar).display = False
        self._set_table_controls(None)

    @property
    def tabular(self) -> bool:
        return bool(self.preview and self.preview["format"] in TABULAR)

    def set_source(self, path: Path, preview: dict | None, error: str | None = None,
                   sheet: str | None = None) -> None:
        """The file to convert and its preview (None: it could not be read, for ``error``); fills the
        defaults. When another ``sheet`` of the same file could not be read, the sheet list stays
        (so another one can be picked) and the error shows here."""
        if preview is None and sheet is not None and self.tabular and Path(path) == self.source:
            self.say(error or f"sheet {sheet!r} could not be read", error=True)
            return
        if path != self.source:
            self._preset_pending = False
        self.source, self.preview, self.unreadable = path, preview, error
        self._set_table_controls(preview)
        if preview is None:
            self.query_one("#conv-source", Static).update(
                Text.assemble(("Source: ", "dim"), (self.rel(Path(path)), "bold"), ("  could not be read (F2)", "red")))
            return
        if self._preset_pending:
            self._preset()
        src, root = Path(path), self.workspace.root
        self.query_one("#conv-source", Static).update(
            Text.assemble(("Source: ", "dim"), (self.rel(src), "bold"), f"  ({preview['format']})"))
        target = src.parent if src.parent.is_relative_to(root) else self.workspace.data
        default = self.rel(target / f"{src.stem}.jsonl")
        if default == self.rel(src):
            default = self.rel(target / f"{src.stem}.converted.jsonl")
        self.set_value("conv-out", self.free(default))  # an existing file is never the default: x-2.jsonl

    def _set_table_controls(self, preview: dict | None) -> None:
        from tuitune.data.formats import target_of

        # Records: for what can be either (conversation formats, GSM8K, tables); pairs and prompt records stay.
        fmt = preview["format"] if preview else None
        self.query_one("#conv-to").parent.display = bool(fmt) and target_of(fmt) == "conversations" \
            and fmt not in ("text", "txt")
        tabular = bool(preview and preview["format"] in TABULAR)
        for wid in ("conv-sheet", "conv-input", "conv-output", "conv-system-col"):
            self.query_one(f"#{wid}").parent.display = tabular
        self.query_one("#conv-preset").display = tabular
        if not tabular:
            return
        cols = [(c, c) for c in preview["columns"] if c.strip()]
        sheet = self.query_one("#conv-sheet", Select)
        sheet.parent.display = preview["format"] == "xlsx"
        with self.prevent(Select.Changed):
            sheet.set_options([(s, s) for s in preview["sheets"]])
            if preview.get("sheet"):
                sheet.value = preview["sheet"]
            for wid in ("conv-input", "conv-output", "conv-system-col"):
                self.query_one(f"#{wid}", Select).set_options(cols)
            guess = preview.get("guess") or {}
            for wid, key in (("conv-input", "input"), ("conv-output", "output")):
                if guess.get(key):
                    self.query_one(f"#{wid}", Select).value = guess[key]

    @on(Select.Changed, "#conv-sheet")
    def _sheet_changed(self, event: Select.Changed) -> None:
        if self.source is not None and event.value is not Select.NULL and self.preview \
                and event.value != self.preview.get("sheet"):
            self.post_message(self.SheetPicked(event.value))

    @on(Button.Pressed, "#conv-preset")
    def _preset(self) -> None:
        from tuitune.data.convert import PRESETS

        p = PRESETS["medqa"]
        sheet = self.query_one("#conv-sheet", Select)
        sheets = self.preview.get("sheets", []) if self.preview else []
        self.set_value("conv-system", p["system"])
        if p["sheet"] in sheets and sheet.value != p["sheet"]:
            # The columns are set when the sheet's preview comes back (the preset is asked again then).
            self._preset_pending = True
            sheet.value = p["sheet"]
            return
        self._preset_pending = False
        cols = self.preview["columns"] if self.preview else []
        missing = [p[k] for k in ("input_col", "output_col") if p[k] not in cols]
        for wid, key in (("conv-input", "input_col"), ("conv-output", "output_col")):
            if p[key] in cols:
                self.query_one(f"#{wid}", Select).value = p[key]
        if p["sheet"] not in sheets:
            shown = f"sheets: {', '.join(sheets)}" if sheets else "it has no sheets"
            self.say(f"MedQA preset: system prompt set; this workbook has no sheet {p['sheet']!r} ({shown}), so "
                     "pick the sheet and the Question and Answer columns yourself, or pick another file (F2)")
        elif missing:
            self.say(f"MedQA preset: system prompt set; sheet {p['sheet']!r} has no column "
                     f"{' or '.join(map(repr, missing))}, so pick the Question and Answer columns yourself")
        else:
            self.say(f"MedQA preset: sheet {p['sheet']!r}, {p['input_col']} → input, {p['output_col']} → "
                     "output, the tutorial's system prompt. Convert: ctrl+r")

    def missing(self) -> str | None:
        """What Convert still needs, said as the missing input (None: it can run)."""
        if self.source is None:
            return "no input file: pick the file to convert in the File tab (F2)"
        if self.preview is None:
            name = self.rel(self.source)
            why = (self.unreadable or "").removeprefix(f"{name}: ")
            if why.endswith("pick another file"):  # the reason says it already: say where
                return f"no input file: {name} could not be read: {why} in the File tab (F2)"
            return f"no input file: {name} could not be read: {why or 'see the File tab'}; pick another file in " \
                   "the File tab (F2)"
        if self.tabular:
            for wid, label, what in (("conv-input", "Question", "the questions (→ input)"),
                                     ("conv-output", "Answer", "the answers (→ output)")):
                if self.select(wid) is None:
                    return f"no {label} column: pick the column that holds {what} in the {label} list"
        if not self.value("conv-out"):
            return f"Output is empty: give the file to write, e.g. {self.rel(self.workspace.data / 'converted.jsonl')}"
        return None

    def run(self) -> None:
        if (missing := self.missing()) is not None:
            self.say(missing, error=True)
            return
        out = self.value("conv-out")
        tabular = self.tabular
        system_col = self.select("conv-system-col") if tabular else None
        opts = dict(
            sheet=self.select("conv-sheet") if tabular and self.preview["format"] == "xlsx" else None,
            input_col=self.select("conv-input") if tabular else None,
            output_col=self.select("conv-output") if tabular else None,
            system_col=system_col,
            system=(self.value("conv-system") or None) if not system_col else None,
            drop_placeholders=self.query_one("#conv-drop", Toggle).value,
            dedupe=self.query_one("#conv-dedupe", Toggle).value,
            to=self.select("conv-to") if self.query_one("#conv-to").parent.display else None,
        )
        src, target = self.source, self.path_of(out)

        def go(fresh: Path | None) -> None:
            if fresh is not None:
                self.set_value("conv-out", self.rel(fresh))
            bar = self.query_one("#conv-progress", ProgressBar)
            bar.display = True
            bar.update(total=None, progress=0)
            self.say(f"Converting {self.rel(src)} …")
            # force: the user was asked (or nothing was there); the engine refuses an existing
            # output unless told, as the CLI does without --force.
            self.run_convert(src, fresh or target, {**opts, "force": True})

        if target.resolve() == src.resolve():
            go(None)  # the engine's own error: it is the input file
            return
        self.confirm_write([target], next_free_path(target), go)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-convert", name="convert",
          description="converting")
    def run_convert(self, src: Path, out: Path, opts: dict):
        from tuitune.data.convert import convert

        worker = get_current_worker()

        def progress(done: int, total: int | None) -> None:
            if not worker.is_cancelled:  # a newer conversion has the bar
                self.post_message(self.Progress(done, total))

        return convert(src, out, progress=progress, cancelled=lambda: worker.is_cancelled, **opts)

    def on_convert_form_progress(self, message: Progress) -> None:
        done, total = message.done, message.total
        self.query_one("#conv-progress", ProgressBar).update(total=total, progress=min(done, total or done))

    def show_error(self, message: str) -> None:
        super().show_error(message)
        self.query_one("#conv-progress", ProgressBar).display = False

    def show_result(self, rep) -> None:
        bar = self.query_one("#conv-progress", ProgressBar)
        bar.update(total=max(rep.total, 1), progress=max(rep.total, 1))
        t = Text()
        root = str(self.workspace.root) + "/"
        for line in (words(self.TAB, l).replace(root, "") for l in rep.lines()):
            style = "bold" if line.startswith("kept") else ("yellow" if not line.startswith(PLAIN) else "")
            t.append(line + "\n", style=style)
        self.say(t)
        self.post_message(self.Written(self.TAB, Path(rep.output)))

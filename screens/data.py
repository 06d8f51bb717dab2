"""The Data step: pick a file, convert it to conversations, split, inspect tokens, self-cognition.

The screen gathers input and shows results; the work is ``tuitune.data`` and
``tuitune.encode``, run in thread workers. Results and failures come back through one
``Worker.StateChanged`` handler; a failure shows as one line in the tab that asked.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (Button, DataTable, DirectoryTree, Input, Label, ProgressBar, Select, Static,
                             TabbedContent, TabPane)
from textual.worker import Worker, WorkerState, get_current_worker

from screens.base import StepScreen
from screens.widgets.choice import ChoiceScreen, overwrite_choices
from screens.widgets.data_filetree import DataFileTree
from screens.widgets.data_tokens import TokenView
from screens.widgets.fields import NumberInput, Toggle, tui_message
from tuitune.fsutil import next_free_path, output_exists
from tuitune.templates import TEMPLATE_NAMES  # light: no transformers at import

TABS = ("tab-file", "tab-convert", "tab-split", "tab-tokens", "tab-selfcog")
CELL_WIDTH = 28
DEFAULT_SELFCOG = "data/self_cognition.jsonl"

#: The engine's errors are written for the CLI; in this step they name the field instead of the flag.
FLAG_LABELS = {
    "--test-ratio": "Test ratio", "--seed": "Seed", "--group-by": "Group", "--name": "Name", "--count": "Count",
    "--max-length": "Max len", "--record": "Record", "--sheet": "Sheet", "--input-col": "Question",
    "--output-col": "Answer", "--system-col": "System col", "--system": "System", "--model": "Model",
    "--template": "Template", "--drop-placeholders": "the 'drop placeholders' box",
    "--dedupe": "the 'dedupe' box", "--group-by input": "grouping (Split tab)",
}
#: Per tab, what ``-o`` means there.
OUTPUT_LABEL = {"convert": "Output", "split": "Folder", "selfcog": "Output"}


def _cell(text: str, width: int = CELL_WIDTH) -> str:
    s = text.replace("\r", "").replace("\n", "⏎").replace("\t", "→")
    return s if len(s) <= width else s[: width - 1] + "…"


def _field(label: str, widget) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), widget, classes="field")


class DataScreen(StepScreen):
    STEP = "data"
    HELP = """
# Data

Turn a spreadsheet or JSON file into training conversations.

1. **File** (F2): pick a file in the workspace (Enter). The detected format and a preview appear.
2. **Convert** (F3): for xlsx/csv choose the sheet and the question and answer columns, an optional
   system prompt (or **MedQA preset**), then **Convert** (ctrl+r). The report lists rows skipped and
   why, placeholder answers (`n/a`) and exact duplicates; dropping them is your choice.
3. **Split** (F4): a seeded train/test split; *group by question* keeps every question on one side,
   so the test set never holds a question the model trained on.
4. **Tokens** (F5): token-length statistics and one record as the model sees it: trained text in
   green, masked text dim.
5. **Self-cognition** (F6): who-are-you data that teaches the model its name.

The same steps from a shell: `tuitune data convert|split|inspect|self-cognition`.
"""
    AUTO_FOCUS = "#data-tree"  # arrow keys move in the file browser as soon as the step opens
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", id="data-run", tooltip="Run this tab's action"),
        # Priority: the tab keys work whichever widget has focus (a checkbox, a button, the table).
        # Not in the footer (with them it is wider than 80 columns): the tabs show their names,
        # F1 help and the palette their keys.
        Binding("f2", "tab('tab-file')", "File", id="data-tab-file", priority=True, show=False,
                tooltip="The File tab: pick a file"),
        Binding("f3", "tab('tab-convert')", "Convert", id="data-tab-convert", priority=True, show=False,
                tooltip="The Convert tab: map columns and convert"),
        Binding("f4", "tab('tab-split')", "Split", id="data-tab-split", priority=True, show=False,
                tooltip="The Split tab: a seeded train/test split"),
        Binding("f5", "tab('tab-tokens')", "Tokens", id="data-tab-tokens", priority=True, show=False,
                tooltip="The Tokens tab: lengths and the trained text"),
        Binding("f6", "tab('tab-selfcog')", "Self-cog", id="data-tab-selfcog", priority=True, show=False,
                tooltip="The Self-cognition tab: who-are-you data"),
    ]
    #: The palette's entries for what the tabs do (ctrl+p), beside the keys above.
    ACTIONS = [
        ("Convert the picked file", "do('tab-convert')", "Convert to conversations with the Convert tab's settings"),
        ("Split into train and test", "do('tab-split')", "Write train.jsonl and test.jsonl (the Split tab)"),
        ("Show tokens", "do('tab-tokens')", "Token lengths and one record as the model sees it"),
        ("Generate self-cognition data", "do('tab-selfcog')", "Who-are-you records with the Self-cognition tab's name"),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.source: Path | None = None
        self.preview: dict | None = None
        self._tokenizers: dict[str, object] = {}

    # --- layout -------------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        ws = self.workspace
        with TabbedContent(id="data-tabs", initial="tab-file"):
            with TabPane("File", id="tab-file"):
                with Horizontal(id="file-pane"):
                    tree = DataFileTree(ws.root, id="data-tree")
                    tree.tooltip = "The workspace's files. Arrows move, Enter opens a folder or picks a file."
                    yield tree
                    with Vertical(id="file-info"):
                        yield Static("Pick a file on the left (Enter).", id="preview-result")
                        table = DataTable(id="data-preview", zebra_stripes=True, cursor_type="row")
                        table.tooltip = "The first rows as read, with newlines shown as ⏎ and tabs as →."
                        yield table
            with TabPane("Convert", id="tab-convert"):
                with VerticalScroll(classes="form"):
                    yield Static("No file picked yet (F2).", id="conv-source", classes="hint")
                    yield _field("Sheet", Select([], prompt="sheet", id="conv-sheet", compact=True))
                    yield _field("Question", Select([], prompt="question column → input", id="conv-input",
                                                    compact=True))
                    yield _field("Answer", Select([], prompt="answer column → output", id="conv-output",
                                                  compact=True))
                    yield _field("System col", Select([], prompt="(none)", id="conv-system-col", compact=True))
                    yield _field("System", Input(placeholder="system prompt for every record (optional)",
                                                 id="conv-system", compact=True))
                    with Horizontal(classes="field"):
                        yield Toggle("drop placeholders", id="conv-drop", compact=True)
                        yield Toggle("dedupe", id="conv-dedupe", compact=True)
                        yield Button("MedQA preset", id="conv-preset", compact=True)
                    yield _field("Output", Input(placeholder="data/out.jsonl", id="conv-out", compact=True))
                    with Horizontal(classes="field"):
                        yield Button("Convert", id="conv-run", variant="primary", compact=True)
                        yield ProgressBar(id="conv-progress", show_eta=False)
                    yield Static("", id="convert-result")
            with TabPane("Split", id="tab-split"):
                with VerticalScroll(classes="form"):
                    yield _field("File", Input(placeholder="data/converted.jsonl", id="split-file", compact=True))
                    yield _field("Test ratio", NumberInput("0.3", id="split-ratio", compact=True, kind="number"))
                    yield _field("Seed", NumberInput("42", id="split-seed", compact=True))
                    yield _field("Group", Toggle("keep each question on one side (group by input)",
                                                 value=True, id="split-group", compact=True))
                    yield _field("Folder", Input(placeholder="data", id="split-out", compact=True))
                    yield Button("Split", id="split-run", variant="primary", compact=True)
                    yield Static("", id="split-result")
            with TabPane("Tokens", id="tab-tokens"):
                with VerticalScroll(classes="form"):
                    yield _field("File", Input(placeholder="data/converted.jsonl", id="tok-file", compact=True))
                    yield _field("Model", Input(self._default_model(), placeholder="models/<name>", id="tok-model",
                                                compact=True))
                    with Horizontal(classes="field"):
                        yield Label("Template", classes="field-label")
                        yield Select([(n, n) for n in TEMPLATE_NAMES], value="auto", id="tok-template", compact=True,
                                     allow_blank=False)
                        yield Label(" Max len", classes="field-label short")
                        yield NumberInput("2048", id="tok-maxlen", compact=True)
                        yield Label(" Record", classes="field-label short")
                        yield NumberInput("1", id="tok-record", compact=True)
                    yield Button("Show tokens", id="tok-run", variant="primary", compact=True)
                    yield Static("", id="tokens-result")
                    yield TokenView("", id="tok-view")
            with TabPane("Self-cognition", id="tab-selfcog"):
                with VerticalScroll(classes="form"):
                    yield _field("Name", Input(placeholder="the name the assistant answers with", id="sc-name",
                                               compact=True))
                    yield _field("Count", NumberInput("150", id="sc-count", compact=True))
                    yield _field("Seed", NumberInput("0", id="sc-seed", compact=True))
                    yield _field("Output", Input(self._free(DEFAULT_SELFCOG), id="sc-out", compact=True))
                    yield Button("Generate", id="sc-run", variant="primary", compact=True)
                    yield Static("", id="selfcog-result")

    def on_mount(self) -> None:
        tips = {
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
            "conv-out": "Where to write the records: .jsonl (one a line) or .json (an array). Relative to the "
                        "workspace.",
            "split-file": "A conversation file (.jsonl or .json) to split.",
            "split-ratio": "Share of records for the test set, e.g. 0.3.",
            "split-seed": "The shuffle seed: the same seed writes the same files.",
            "split-group": "Keep every record with the same question on one side, so test questions are unseen.",
            "split-out": "Folder for train.jsonl and test.jsonl.",
            "tok-file": "A conversation file to validate and measure.",
            "tok-model": "A model folder with tokenizer files (e.g. models/tiny-chat).",
            "tok-template": "auto = the tokenizer's own chat template; or an XTuner template by name.",
            "tok-maxlen": "Records longer than this many tokens are truncated in training.",
            "tok-record": "Which record to show (1 = the first).",
            "sc-name": "The name: answers say 'I am <name>'s assistant' / '我是<name>的小助手'.",
            "sc-count": "How many distinct question/answer records to write (no two alike).",
            "sc-seed": "The seed for the mix of phrasings.",
            "sc-out": "Output file, relative to the workspace.",
        }
        for wid, tip in tips.items():
            self.query_one(f"#{wid}").tooltip = tip
        self.query_one("#conv-progress", ProgressBar).display = False
        self._set_table_controls(None)

    # --- helpers ------------------------------------------------------------------------------

    def _default_model(self) -> str:
        models = self.workspace.models
        if models.is_dir():
            for p in sorted(models.iterdir()):
                if p.is_dir() and (p / "tokenizer_config.json").exists():
                    return self._rel(p)
        return ""

    def _rel(self, p: Path) -> str:
        try:
            return p.resolve().relative_to(self.workspace.root).as_posix()
        except ValueError:
            return str(p)

    def _abs(self, text: str) -> Path:
        p = Path(text.strip()).expanduser()
        return p if p.is_absolute() else self.workspace.root / p

    def _free(self, rel: str) -> str:
        """``rel`` (workspace-relative) or, when a file is there already, the first free ``x-2`` name."""
        return self._rel(next_free_path(self._abs(rel)))

    def _value(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    def _select(self, wid: str) -> str | None:
        v = self.query_one(f"#{wid}", Select).value
        return None if v is Select.NULL else v

    def _say(self, name: str, text: Text | str, error: bool = False) -> None:
        w = self.query_one(f"#{name}-result", Static)
        w.set_class(error, "error")
        w.update(Text(f"error: {text}", style="bold") if error else text)

    def _int(self, wid: str, what: str, low: int | None = None) -> int:
        from tuitune.errors import TuituneError

        try:
            v = int(self._value(wid))
        except ValueError:
            raise TuituneError(f"{what}: {self._value(wid)!r} is not a whole number") from None
        if low is not None and v < low:
            raise TuituneError(f"{what} {v}: must be at least {low}")
        return v

    def _engine_error(self, tab: str, message: str) -> str:
        """An engine error (written for the CLI) in this step's words: field labels, not flags."""
        return tui_message(message, {**FLAG_LABELS, "-o": OUTPUT_LABEL.get(tab, "Output")})

    def _confirm_write(self, tab: str, targets: list[Path], fresh: Path, go) -> None:
        """Call ``go(None)`` now if nothing in ``targets`` exists; else ask first: overwrite
        (``go(None)``), write to the free name ``fresh`` instead (``go(fresh)``), or cancel."""
        there = [t for t in targets if output_exists(t)]
        if not there:
            go(None)
            return
        names = " and ".join(self._rel(t) for t in there)
        verb = "exists" if len(there) == 1 else "exist"

        def answer(choice: str | None) -> None:
            if choice == "overwrite":
                go(None)
            elif choice == "new":
                go(fresh)
            else:
                self._say(tab, f"Not written: {names} {verb} (nothing changed).")

        self.app.push_screen(ChoiceScreen("Overwrite?", f"{names} {verb}. Overwrite, write {self._rel(fresh)} "
                                          "instead, or cancel?", overwrite_choices()), answer)

    def _set_table_controls(self, preview: dict | None) -> None:
        tabular = bool(preview and preview["format"] in ("xlsx", "csv"))
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
                sel = self.query_one(f"#{wid}", Select)
                sel.set_options(cols)
            guess = preview.get("guess") or {}
            for wid, key in (("conv-input", "input"), ("conv-output", "output")):
                if guess.get(key):
                    self.query_one(f"#{wid}", Select).value = guess[key]

    # --- actions ------------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        """Show ``tab`` and move the focus into it (never left behind in a hidden tab)."""
        tabs = self.query_one("#data-tabs", TabbedContent)
        tabs.active = tab
        pane = self.query_one(f"#{tab}", TabPane)
        if self.focused is not None and pane in self.focused.ancestors:
            return
        # The first field of the tab (not the scrolling form around it), in the order shown.
        def shown(w) -> bool:
            return all(n.display for n in [w, *w.ancestors[: w.ancestors.index(pane)]])

        first = next((w for w in pane.query("*") if w.can_focus and not w.disabled and shown(w)
                      and not w.has_class("form")), None)
        self.set_focus(first)

    def action_do(self, tab: str) -> None:
        """Show ``tab`` and run its action (the palette's "Convert", "Split", ...)."""
        self.action_tab(tab)
        self.action_run()

    def action_run(self) -> None:
        active = self.query_one("#data-tabs", TabbedContent).active
        {"tab-file": lambda: self.action_tab("tab-convert") if self.source else None,
         "tab-convert": self.start_convert, "tab-split": self.start_split, "tab-tokens": self.start_tokens,
         "tab-selfcog": self.start_selfcog}[active]()

    @on(DirectoryTree.FileSelected, "#data-tree")
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.pick(event.path)

    def pick(self, path: Path, sheet: str | None = None) -> None:
        """Select ``path`` as the source: preview it and fill the forms' defaults."""
        self.source = Path(path)
        self._say("preview", f"Reading {self._rel(self.source)} …")
        self.load_preview(self.source, sheet)

    @on(Select.Changed, "#conv-sheet")
    def _sheet_changed(self, event: Select.Changed) -> None:
        if self.source is not None and event.value is not Select.NULL and self.preview \
                and event.value != self.preview.get("sheet"):
            self.load_preview(self.source, event.value)

    @on(Button.Pressed, "#conv-preset")
    def _preset(self) -> None:
        from tuitune.data.convert import PRESETS

        p = PRESETS["medqa"]
        sheet = self.query_one("#conv-sheet", Select)
        if self.preview and p["sheet"] in self.preview.get("sheets", []) and sheet.value != p["sheet"]:
            sheet.value = p["sheet"]
        cols = self.preview["columns"] if self.preview else []
        for wid, key in (("conv-input", "input_col"), ("conv-output", "output_col")):
            if p[key] in cols:
                self.query_one(f"#{wid}", Select).value = p[key]
        self.query_one("#conv-system", Input).value = p["system"]

    @on(Button.Pressed, "#conv-run")
    def _conv_btn(self) -> None:
        self.start_convert()

    @on(Button.Pressed, "#split-run")
    def _split_btn(self) -> None:
        self.start_split()

    @on(Button.Pressed, "#tok-run")
    def _tok_btn(self) -> None:
        self.start_tokens()

    @on(Button.Pressed, "#sc-run")
    def _sc_btn(self) -> None:
        self.start_selfcog()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.action_run()

    def start_convert(self) -> None:
        if self.source is None:
            self._say("convert", "pick a file first (F2)", error=True)
            return
        out = self._value("conv-out")
        if not out:
            self._say("convert", "give an output file, e.g. data/converted.jsonl", error=True)
            return
        tabular = bool(self.preview and self.preview["format"] in ("xlsx", "csv"))
        system_col = self._select("conv-system-col") if tabular else None
        opts = dict(
            sheet=self._select("conv-sheet") if tabular and self.preview["format"] == "xlsx" else None,
            input_col=self._select("conv-input") if tabular else None,
            output_col=self._select("conv-output") if tabular else None,
            system_col=system_col,
            system=(self._value("conv-system") or None) if not system_col else None,
            drop_placeholders=self.query_one("#conv-drop", Toggle).value,
            dedupe=self.query_one("#conv-dedupe", Toggle).value,
        )
        src, target = self.source, self._abs(out)

        def go(fresh: Path | None) -> None:
            dest = fresh or target
            if fresh is not None:
                self.query_one("#conv-out", Input).value = self._rel(fresh)
            bar = self.query_one("#conv-progress", ProgressBar)
            bar.display = True
            bar.update(total=None, progress=0)
            self._say("convert", f"Converting {self._rel(src)} …")
            # force: the user was asked (or nothing was there); the engine refuses an existing
            # output unless told, as the CLI does without --force.
            self.run_convert(src, dest, {**opts, "force": True})

        if target.resolve() == src.resolve():
            go(None)  # the engine's own error: it is the input file
            return
        self._confirm_write("convert", [target], next_free_path(target), go)

    def start_split(self) -> None:
        from tuitune.errors import TuituneError

        try:
            src = self._value("split-file")
            if not src:
                raise TuituneError("give the conversation file to split")
            try:
                ratio = float(self._value("split-ratio"))
            except ValueError:
                raise TuituneError(f"Test ratio {self._value('split-ratio')!r} is not a number (e.g. 0.3)") from None
            if not 0 < ratio < 1:
                raise TuituneError(f"Test ratio {ratio:g}: must be between 0 and 1 (e.g. 0.3)")
            seed = self._int("split-seed", "Seed")
        except TuituneError as exc:
            self._say("split", str(exc), error=True)
            return
        group = "input" if self.query_one("#split-group", Toggle).value else None
        out = self._value("split-out")
        source = self._abs(src)
        folder = self._abs(out) if out else source.parent

        def go(fresh: Path | None) -> None:
            if fresh is not None:
                self.query_one("#split-out", Input).value = self._rel(fresh)
            self._say("split", "Splitting …")
            self.run_split(source, fresh or folder, ratio, seed, group)

        targets = [folder / "train.jsonl", folder / "test.jsonl"]
        self._confirm_write("split", targets, next_free_path(folder / f"{source.stem}-split"), go)

    def start_tokens(self) -> None:
        from tuitune.errors import TuituneError

        try:
            f, m = self._value("tok-file"), self._value("tok-model")
            if not f or not m:
                raise TuituneError("give a conversation file and a model folder")
            maxlen = self._int("tok-maxlen", "Max len", 1)
            rec = self._int("tok-record", "Record", 1)
        except TuituneError as exc:
            self._say("tokens", str(exc), error=True)
            return
        self._say("tokens", "Tokenizing … (the first time loads the tokenizer)")
        self.run_tokens(self._abs(f), self._abs(m), self._select("tok-template"), maxlen, rec)

    def start_selfcog(self) -> None:
        from tuitune.data.selfcog import MAX_RECORDS
        from tuitune.errors import TuituneError

        try:
            name = self._value("sc-name")
            if not name:
                raise TuituneError("Name: give the name the assistant answers with")
            count = self._int("sc-count", "Count", 1)
            if count > MAX_RECORDS:
                raise TuituneError(f"Count {count}: the phrasings make only {MAX_RECORDS} distinct records; "
                                   f"ask for {MAX_RECORDS} or fewer")
            seed = self._int("sc-seed", "Seed")
            out = self._value("sc-out") or DEFAULT_SELFCOG
        except TuituneError as exc:
            self._say("selfcog", str(exc), error=True)
            return
        target = self._abs(out)

        def go(fresh: Path | None) -> None:
            if fresh is not None:
                self.query_one("#sc-out", Input).value = self._rel(fresh)
            self.run_selfcog(name, count, seed, fresh or target)

        self._confirm_write("selfcog", [target], next_free_path(target), go)

    # --- workers (threads; results come back through on_worker_state_changed) -----------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-preview", name="preview",
          description="reading the file")
    def load_preview(self, path: Path, sheet: str | None):
        from tuitune.data.convert import preview

        return preview(path, sheet=sheet, limit=30)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-convert", name="convert",
          description="converting")
    def run_convert(self, src: Path, out: Path, opts: dict):
        from tuitune.data.convert import convert

        worker = get_current_worker()
        bar = self.query_one("#conv-progress", ProgressBar)

        def progress(done: int, total: int | None) -> None:
            self.app.call_from_thread(bar.update, total=total, progress=min(done, total or done))

        return convert(src, out, progress=progress, cancelled=lambda: worker.is_cancelled, **opts)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-split", name="split", description="splitting")
    def run_split(self, src: Path, out: Path | None, ratio: float, seed: int, group: str | None):
        from tuitune.data.split import split_file

        return split_file(src, out, ratio, seed, group)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-tokens", name="tokens",
          description="tokenizing")
    def run_tokens(self, f: Path, model: Path, template: str, maxlen: int, record: int):
        from tuitune.data.inspect import inspect_file, load_tokenizer

        key = str(model.resolve())
        if key not in self._tokenizers:
            self._tokenizers[key] = load_tokenizer(model)
        return inspect_file(f, model, template, maxlen, record, tokenizer=self._tokenizers[key])

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-selfcog", name="selfcog",
          description="generating")
    def run_selfcog(self, name: str, count: int, seed: int, out: Path):
        from tuitune.data.selfcog import write_self_cognition

        return name, write_self_cognition(out, name, count, seed), out

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        w = event.worker
        if not w.group.startswith("data-") or w.is_cancelled:
            return
        if event.state == WorkerState.ERROR:
            from tuitune.errors import TuituneError

            exc = w.error
            msg = str(exc) if isinstance(exc, TuituneError) else f"{type(exc).__name__}: {exc}"
            self._say(w.name, self._engine_error(w.name, msg), error=True)
            if w.name == "convert":
                self.query_one("#conv-progress", ProgressBar).display = False
            if w.name == "preview":
                self.preview = None
                self.query_one("#data-preview", DataTable).clear(columns=True)
                self._set_table_controls(None)
        elif event.state == WorkerState.SUCCESS:
            getattr(self, f"_show_{w.name}")(w.result)

    # --- results ------------------------------------------------------------------------------

    def _show_preview(self, res: dict) -> None:
        self.preview = res
        src = self.source
        rel = self._rel(src)
        extra = ""
        if res.get("sheet"):
            extra = f" · sheet {res['sheet']} of {', '.join(res['sheets'])}"
        if res.get("encoding"):
            extra += f" · {res['encoding'].replace('-sig', '')}"
        text = Text.assemble((rel, "bold"), "\n", ("format: ", "dim"), (res["format"], "bold cyan"),
                             f" — {res['reason']}{extra}")
        self._say("preview", text)
        table = self.query_one("#data-preview", DataTable)
        table.clear(columns=True)
        table.add_columns(*[_cell(c, 20) or "·" for c in res["columns"]])
        for row in res["rows"]:
            table.add_row(*[_cell(c) for c in row[: len(res["columns"])]])
        self.query_one("#conv-source", Static).update(
            Text.assemble(("Source: ", "dim"), (rel, "bold"), f"  ({res['format']})"))
        self._set_table_controls(res)
        out = self.query_one("#conv-out", Input)
        target = (src.parent if src.parent.is_relative_to(self.workspace.root) else self.workspace.data)
        default = self._rel(target / f"{src.stem}.jsonl")
        if default == rel:
            default = self._rel(target / f"{src.stem}.converted.jsonl")
        out.value = self._free(default)  # an existing file is never the default: x.jsonl → x-2.jsonl
        if res["format"] == "xtuner":
            for wid in ("split-file", "tok-file"):
                self.query_one(f"#{wid}", Input).value = rel

    def _show_convert(self, rep) -> None:
        bar = self.query_one("#conv-progress", ProgressBar)
        bar.update(total=max(rep.total, 1), progress=max(rep.total, 1))
        t = Text()
        root = str(self.workspace.root) + "/"
        for line in (self._engine_error("convert", l.replace(root, "")) for l in rep.lines()):
            style = "bold" if line.startswith("kept") else ("yellow" if not line.startswith(("  ", "format",
                                                                                             "mapping", "note",
                                                                                             "encoding")) else "")
            t.append(line + "\n", style=style)
        self._say("convert", t)
        out = self._rel(Path(rep.output))
        for wid in ("split-file", "tok-file"):
            self.query_one(f"#{wid}", Input).value = out
        self.query_one("#split-out", Input).value = self._rel(Path(rep.output).parent)
        self.query_one(DataFileTree).reload()

    def _show_split(self, res) -> None:
        lines = [self._engine_error("split", l.replace(str(self.workspace.root) + "/", "")) for l in res.lines()]
        self._say("split", Text("\n".join(lines), style="bold"))
        self.query_one("#tok-file", Input).value = self._rel(Path(res.train_path))
        self.query_one(DataFileTree).reload()

    def _show_tokens(self, res) -> None:
        self._say("tokens", Text("\n".join(res.lines()[1:]) + f"\nrecord {res.record} ({res.record_where}): "
                                 f"{res.record_tokens} tokens, {res.record_trained} trained"))
        self.query_one("#tok-view", TokenView).show(res.spans)

    def _show_selfcog(self, res) -> None:
        name, n, out = res
        self._say("selfcog", Text(f"wrote {n} records for {name!r} → {self._rel(out)}", style="bold"))
        self.query_one(DataFileTree).reload()

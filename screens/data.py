"""The Data step: pick a file, convert it to conversations, split, inspect tokens, self-cognition.

Layer twin: ``tuitune/commands/data.py`` is the same step's CLI verb (one name, two layers).

The screen holds the tabs and passes what one tab made to the next (the picked file to
Convert, a converted file to Split and Tokens); each tab is a widget under
``screens/widgets/data/`` that gathers its fields, runs ``tuitune.data`` or
``tuitune.encode`` in a thread worker, and shows the result or a one-line failure in place.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, TabbedContent, TabPane

from screens.base import StepScreen
from screens.widgets.data.convert_tab import ConvertForm
from screens.widgets.data.file_tab import FilePane
from screens.widgets.data.filetree import DataFileTree
from screens.widgets.data.tab_form import DataForm
from screens.widgets.data.selfcog_tab import SelfCogForm
from screens.widgets.data.split_tab import SplitForm
from screens.widgets.data.tokens import TokensForm


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

The file tree shows new files by itself (it looks every 2 s); **r** reads the folders again at once.
The same steps from a shell: `tuitune data convert|split|inspect|self-cognition`.
"""
    AUTO_FOCUS = "#data-tree"  # arrow keys move in the file browser as soon as the step opens
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", id="data-run", tooltip="Run this tab's action"),
        # Not priority: typed into a text field, r is a letter.
        Binding("r", "reload", "Reload files", id="data-reload",
                tooltip="Read the workspace's folders again (new files also appear by themselves within 2 s)"),
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

    # --- layout -------------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with TabbedContent(id="data-tabs", initial="tab-file"):
            with TabPane("File", id="tab-file"):
                yield FilePane(self.workspace.root, id="file-pane")
            with TabPane("Convert", id="tab-convert"):
                yield ConvertForm()
            with TabPane("Split", id="tab-split"):
                yield SplitForm()
            with TabPane("Tokens", id="tab-tokens"):
                yield TokensForm()
            with TabPane("Self-cognition", id="tab-selfcog"):
                yield SelfCogForm()

    @property
    def source(self):
        """The file picked last in the File tab (None: none yet)."""
        return self.query_one(FilePane).source

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

    def action_reload(self) -> None:
        """Read the file tree's folders again (files copied in over SSH)."""
        self.query_one(DataFileTree).reread()

    def on_screen_resume(self) -> None:
        """Entering the step reads the folders again: another step may have written files."""
        self.query_one(DataFileTree).reread()

    def action_do(self, tab: str) -> None:
        """Show ``tab`` and run its action (the palette's "Convert", "Split", ...)."""
        self.action_tab(tab)
        self.action_run()

    def action_run(self) -> None:
        active = self.query_one("#data-tabs", TabbedContent).active
        if active == "tab-file":
            if self.source:
                self.action_tab("tab-convert")
            return
        self.query_one(f"#{active}").query_one(DataForm).run()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.action_run()

    # --- what one tab hands the next --------------------------------------------------------

    def on_file_pane_previewed(self, message: FilePane.Previewed) -> None:
        self.query_one(ConvertForm).set_source(message.path, message.preview, message.error, message.sheet)
        if message.preview is not None and message.preview["format"] == "xtuner":
            self.query_one(SplitForm).use(message.path)
            self.query_one(TokensForm).use(message.path)

    def on_convert_form_sheet_picked(self, message: ConvertForm.SheetPicked) -> None:
        pane = self.query_one(FilePane)
        pane.load_preview(pane.source, message.sheet)

    def on_data_form_written(self, message: DataForm.Written) -> None:
        if message.tab == "convert":
            self.query_one(SplitForm).use(message.path, folder=message.path.parent)
            self.query_one(TokensForm).use(message.path)
        elif message.tab == "split":
            self.query_one(TokensForm).use(message.path)
        self.query_one(DataFileTree).reread()
